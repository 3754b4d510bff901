//! The ready queue: READY tasks ordered by priority class, then the tenant's weighted fair
//! share, then age (enqueue order).
//!
//! Fair share is start-time fair queuing over tenants. Every tenant has a virtual time that
//! grows by the estimated work of each task dispatched for it, divided by its weight
//! ([`TenantWeights`]); within a priority class the tenant with the smallest virtual time
//! goes next. So two backlogged tenants of weights 3 and 1 get three quarters and one
//! quarter of the dispatched work, whatever their queue lengths, and a tenant that submits
//! 10,000 jobs does not hold back one that submits ten. A tenant that had nothing queued
//! starts at the farm's current virtual time: idle time earns no credit to burst later.
//! Virtual times live in memory; a new leader rebuilds them from the committed work of the
//! unfinished jobs ([`ReadyQueues::credit`], then [`ReadyQueues::settle`]): the service each
//! backlogged tenant already had in the current backlog, so a failover does not hand the
//! tenant that was ahead a fresh start.
//!
//! Entries are never removed from the middle: a task that leaves READY (cancelled, or its
//! job failed) stays queued and is skipped when popped (lazy deletion); a skipped entry
//! charges nothing. Every operation is O(log tenants).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::model::{JobId, Priority};

/// Largest weight a tenant may have (the smallest is 1).
pub const MAX_TENANT_WEIGHT: u32 = 1000;

/// Each tenant's share of the farm relative to the others; tenants not named weigh 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantWeights(HashMap<String, u32>);

impl TenantWeights {
    /// Parses `tenant=weight` pairs, e.g. `["ads=3", "crm=1"]`; the message names the bad
    /// pair and the bound.
    pub fn parse<S: AsRef<str>>(pairs: &[S]) -> Result<Self, String> {
        let mut weights = HashMap::new();
        for pair in pairs {
            let pair = pair.as_ref().trim();
            let (tenant, weight) = pair
                .split_once('=')
                .ok_or_else(|| format!("--tenant-weights: {pair:?} must be TENANT=WEIGHT"))?;
            crate::model::tenant::validate(tenant)
                .map_err(|e| format!("--tenant-weights: tenant {e}"))?;
            let weight: u32 = weight
                .parse()
                .ok()
                .filter(|w| (1..=MAX_TENANT_WEIGHT).contains(w))
                .ok_or_else(|| {
                    format!(
                        "--tenant-weights: the weight of {tenant:?} must be an integer 1..={MAX_TENANT_WEIGHT}, got {weight:?}"
                    )
                })?;
            if weights.insert(tenant.to_string(), weight).is_some() {
                return Err(format!(
                    "--tenant-weights: {tenant:?} is given a weight twice"
                ));
            }
        }
        Ok(Self(weights))
    }

    /// Parses the flag's form: `ads=3,crm=1`; empty means every tenant weighs 1.
    pub fn from_flag(s: &str) -> Result<Self, String> {
        let pairs: Vec<&str> = s.split(',').filter(|p| !p.trim().is_empty()).collect();
        Self::parse(&pairs)
    }

    pub fn get(&self, tenant: &str) -> u32 {
        self.0.get(tenant).copied().unwrap_or(1)
    }
}

/// One queued task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyItem {
    pub priority: Priority,
    /// Monotonic enqueue number: lower is older.
    pub seq: u64,
    pub job_id: JobId,
    pub task_index: u32,
    /// Estimated work, charged to the tenant when the task is dispatched.
    pub cost: u64,
}

/// Virtual time, in work units × [`MAX_TENANT_WEIGHT`] / weight (exact for every weight).
type VTime = u128;

#[derive(Debug)]
struct TenantState {
    vtime: VTime,
    weight: u32,
    /// Priority classes in which the tenant has entries.
    classes: u8,
}

/// One priority class: each tenant's entries, oldest first, and the tenants in serving order.
#[derive(Debug, Default)]
struct Class {
    queues: HashMap<Arc<str>, VecDeque<ReadyItem>>,
    /// (virtual time, tenant) of every tenant with entries here: the first goes next.
    order: BTreeSet<(VTime, Arc<str>)>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct ReadyQueue {
    classes: BTreeMap<Priority, Class>,
    tenants: HashMap<Arc<str>, TenantState>,
    weights: TenantWeights,
    /// The start tag of the last dispatch: where a tenant that becomes active starts.
    system_vtime: VTime,
    next_seq: u64,
    len: usize,
    /// Dispatches charged; every [`SWEEP_EVERY`] the tenants that left are dropped.
    charges: u64,
}

/// How often the tenant map is swept of tenants with nothing queued and no debt.
const SWEEP_EVERY: u64 = 1024;

impl ReadyQueue {
    pub fn new(weights: TenantWeights) -> Self {
        Self {
            weights,
            ..Self::default()
        }
    }

    pub fn push(
        &mut self,
        priority: Priority,
        tenant: &str,
        job_id: JobId,
        task_index: u32,
        cost: u64,
    ) {
        self.next_seq += 1;
        self.len += 1;
        let item = ReadyItem {
            priority,
            seq: self.next_seq,
            job_id,
            task_index,
            cost,
        };
        let tenant: Arc<str> = match self.tenants.get_key_value(tenant) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = tenant.into();
                let state = TenantState {
                    vtime: 0,
                    weight: self.weights.get(tenant),
                    classes: 0,
                };
                self.tenants.insert(k.clone(), state);
                k
            }
        };
        let state = self.tenants.get_mut(&tenant).expect("inserted above");
        if state.classes == 0 {
            // Idle until now: no credit for the idle time.
            state.vtime = state.vtime.max(self.system_vtime);
        }
        let class = self.classes.entry(priority).or_default();
        let queue = class.queues.entry(tenant.clone()).or_default();
        if queue.is_empty() {
            state.classes += 1;
            class.order.insert((state.vtime, tenant));
        }
        queue.push_back(item);
    }

    /// Pops the best entry for which `still_ready` holds, dropping stale ones on the way,
    /// and charges its cost to its tenant.
    pub fn pop(&mut self, mut still_ready: impl FnMut(&ReadyItem) -> bool) -> Option<ReadyItem> {
        loop {
            let mut class_entry = self.classes.last_entry()?;
            let class = class_entry.get_mut();
            let (vtime, tenant) = class.order.first().cloned().expect("a class has tenants");
            let queue = class
                .queues
                .get_mut(&tenant)
                .expect("ordered tenants have entries");
            let item = queue.pop_front().expect("queues are never left empty");
            self.len -= 1;
            if queue.is_empty() {
                class.queues.remove(&tenant);
                class.order.remove(&(vtime, tenant.clone()));
                if class.order.is_empty() {
                    class_entry.remove();
                }
                self.tenants
                    .get_mut(&tenant)
                    .expect("queued tenants are known")
                    .classes -= 1;
            }
            let live = still_ready(&item);
            if live {
                self.charge(&tenant, item.cost);
            }
            self.forget_if_idle(&tenant);
            if self.len == 0 {
                // Nothing waits, so nobody is owed anything: start level from here.
                self.system_vtime = self
                    .tenants
                    .values()
                    .map(|s| s.vtime)
                    .fold(self.system_vtime, VTime::max);
                self.tenants.clear();
            }
            if live {
                return Some(item);
            }
        }
    }

    /// Advances `tenant`'s virtual time by `cost` / its weight from where a dispatch starts
    /// it (its own or the farm's, the later), keeping every class's order.
    fn charge(&mut self, tenant: &Arc<str>, cost: u64) {
        let vtime = self
            .tenants
            .get(tenant)
            .expect("queued tenants are known")
            .vtime;
        let start = vtime.max(self.system_vtime);
        self.system_vtime = start;
        self.advance(tenant, start, cost);
        self.charges += 1;
        if self.charges.is_multiple_of(SWEEP_EVERY) {
            let now = self.system_vtime;
            self.tenants.retain(|_, s| s.classes > 0 || s.vtime > now);
        }
    }

    /// Sets `tenant`'s virtual time to `from` + `cost` / its weight and moves it to its new
    /// place in every class it has entries in.
    fn advance(&mut self, tenant: &Arc<str>, from: VTime, cost: u64) {
        let state = self
            .tenants
            .get_mut(tenant)
            .expect("queued tenants are known");
        let old = state.vtime;
        state.vtime =
            from + VTime::from(cost) * VTime::from(MAX_TENANT_WEIGHT) / VTime::from(state.weight);
        if state.classes > 0 {
            let new = state.vtime;
            for class in self.classes.values_mut() {
                if class.order.remove(&(old, tenant.clone())) {
                    class.order.insert((new, tenant.clone()));
                }
            }
        }
    }

    /// Charges `cost` of work `tenant` already had (rebuilding after a failover); a tenant
    /// with nothing queued here has no backlog to weigh and is left out.
    /// Unlike a dispatch's charge it leaves the farm's virtual time alone: every tenant's
    /// credits count from the same start.
    pub fn credit(&mut self, tenant: &str, cost: u64) {
        let Some((key, state)) = self.tenants.get_key_value(tenant) else {
            return;
        };
        let (key, from) = (key.clone(), state.vtime);
        self.advance(&key, from, cost);
    }

    /// After the credits: the farm's virtual time is the least of the backlogged tenants',
    /// where it would have been had they been served here, so a tenant arriving next starts
    /// level with them rather than ahead.
    pub fn settle(&mut self) {
        if let Some(least) = self
            .tenants
            .values()
            .filter(|s| s.classes > 0)
            .map(|s| s.vtime)
            .min()
        {
            self.system_vtime = least;
        }
    }

    /// Drops a tenant with nothing queued and no debt (its state would be rebuilt the same),
    /// so the map holds only recently active tenants.
    fn forget_if_idle(&mut self, tenant: &Arc<str>) {
        if self
            .tenants
            .get(tenant)
            .is_some_and(|s| s.classes == 0 && s.vtime <= self.system_vtime)
        {
            self.tenants.remove(tenant);
        }
    }

    /// The highest priority class with entries (stale ones included).
    pub fn top_priority(&self) -> Option<Priority> {
        self.classes.keys().next_back().copied()
    }

    /// Entries queued, stale ones included (the tests' view of the queue).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The queued tasks of one batch group, oldest first, each once (a task dispatch defers is
/// queued again, and a requeued one may still have its old entry).
#[derive(Debug, Default)]
struct BatchGroup {
    entries: VecDeque<(Arc<str>, ReadyItem)>,
    members: HashSet<(JobId, u32)>,
}

/// The farm's ready queues: one for tasks any worker can run (the reference pipeline, and
/// the PLAN, AUDIO and ASSEMBLE tasks of model jobs), and one per open model for the tasks
/// only a worker serving that model can run. A worker is offered its models' queues first
/// (a GPU node with a model loaded is the scarce part), then the shared one. Each queue
/// keeps its own fair share over tenants.
#[derive(Debug, Default)]
pub struct ReadyQueues {
    any: ReadyQueue,
    by_model: HashMap<String, ReadyQueue>,
    weights: TenantWeights,
    /// Model tasks that may run in one batch, by batch group (an opaque key of what they
    /// must share; see the farm's `batching`), oldest first: a second index over entries
    /// that stay in their model's queue. Lazy like the queues: an entry dispatched through
    /// its queue stays here until a take or a prune skips it.
    groups: HashMap<u64, BatchGroup>,
}

impl ReadyQueues {
    pub fn new(weights: TenantWeights) -> Self {
        Self {
            any: ReadyQueue::new(weights.clone()),
            by_model: HashMap::new(),
            weights,
            groups: HashMap::new(),
        }
    }

    /// Queues a task; `model` is the model it needs, if any, and `group` its batch group
    /// (a model task that may share a batch).
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        model: Option<&str>,
        group: Option<u64>,
        priority: Priority,
        tenant: &str,
        job_id: JobId,
        task_index: u32,
        cost: u64,
    ) {
        if let (Some(g), Some(_)) = (group, model) {
            let item = ReadyItem {
                priority,
                seq: 0,
                job_id: job_id.clone(),
                task_index,
                cost,
            };
            // A task deferred by dispatch is queued again: its group entry stays one.
            let group = self.groups.entry(g).or_default();
            if group.members.insert((job_id.clone(), task_index)) {
                group.entries.push_back((tenant.into(), item));
            }
        }
        let queue = match model {
            None => &mut self.any,
            Some(m) => match self.by_model.get_mut(m) {
                Some(q) => q,
                None => self
                    .by_model
                    .entry(m.to_string())
                    .or_insert_with(|| ReadyQueue::new(self.weights.clone())),
            },
        };
        queue.push(priority, tenant, job_id, task_index, cost);
    }

    /// Pops the best entry a worker serving `models` can run (see the type's docs), for
    /// which `still_ready` holds; stale entries are dropped on the way. The highest
    /// priority among all those queues goes first (a HIGH task of the worker's last-listed
    /// model, or of the shared queue, is not kept waiting behind NORMAL work of another);
    /// within one priority, its models' queues before the shared one, in their order.
    pub fn pop_for(
        &mut self,
        models: &[String],
        mut still_ready: impl FnMut(&ReadyItem) -> bool,
    ) -> Option<ReadyItem> {
        let top = models
            .iter()
            .filter_map(|m| self.by_model.get(m)?.top_priority())
            .chain(self.any.top_priority())
            .max();
        // First the queues whose best entries have the top priority, then all of them.
        for only in [top, None] {
            if let Some(item) = self.pop_first(models, only, &mut still_ready) {
                return Some(item);
            }
        }
        None
    }

    /// The first live entry of `models`' queues, then of the shared one, taking only
    /// queues whose best entries are of priority `only` when it is set.
    fn pop_first(
        &mut self,
        models: &[String],
        only: Option<Priority>,
        still_ready: &mut impl FnMut(&ReadyItem) -> bool,
    ) -> Option<ReadyItem> {
        let wanted = |q: &ReadyQueue| only.is_none_or(|p| q.top_priority() == Some(p));
        for m in models {
            let Some(queue) = self.by_model.get_mut(m).filter(|q| wanted(q)) else {
                continue;
            };
            let item = queue.pop(&mut *still_ready);
            if queue.is_empty() {
                self.by_model.remove(m);
            }
            if item.is_some() {
                return item;
            }
        }
        if wanted(&self.any) {
            return self.any.pop(&mut *still_ready);
        }
        None
    }

    /// Entries of each batch group (stale ones included): an upper bound of the tasks a
    /// batch of that group could take now (dispatch's view while it pops).
    pub fn group_lens(&self) -> HashMap<u64, usize> {
        self.groups
            .iter()
            .map(|(g, e)| (*g, e.entries.len()))
            .collect()
    }

    /// Takes up to `n` entries of batch group `group`, oldest first, for which
    /// `still_ready` holds (stale ones are dropped on the way), and charges each to its
    /// tenant in `model`'s queue as a dispatch would. Their entries in that queue stay and
    /// are skipped when popped: `still_ready` must mark the task as no longer queued.
    pub fn take_group(
        &mut self,
        model: &str,
        group: u64,
        n: usize,
        mut still_ready: impl FnMut(&ReadyItem) -> bool,
    ) -> Vec<ReadyItem> {
        let mut taken: Vec<(Arc<str>, ReadyItem)> = Vec::new();
        let Some(entries) = self.groups.get_mut(&group) else {
            return Vec::new();
        };
        while taken.len() < n {
            let Some((tenant, item)) = entries.entries.pop_front() else {
                break;
            };
            entries
                .members
                .remove(&(item.job_id.clone(), item.task_index));
            if still_ready(&item) {
                taken.push((tenant, item));
            }
        }
        if entries.entries.is_empty() {
            self.groups.remove(&group);
        }
        let queue = self.by_model.get_mut(model);
        if let Some(q) = queue {
            for (tenant, item) in &taken {
                if q.tenants.contains_key(tenant) {
                    q.charge(tenant, item.cost);
                }
            }
        }
        taken.into_iter().map(|(_, item)| item).collect()
    }

    /// Drops the batch groups' entries for which `still_queued` fails (dispatched through
    /// their queue, cancelled): run now and then, so groups no batch takes stay small.
    pub fn prune_groups(&mut self, mut still_queued: impl FnMut(&ReadyItem) -> bool) {
        self.groups.retain(|_, group| {
            let BatchGroup { entries, members } = group;
            entries.retain(|(_, item)| {
                let keep = still_queued(item);
                if !keep {
                    members.remove(&(item.job_id.clone(), item.task_index));
                }
                keep
            });
            !entries.is_empty()
        });
    }

    /// Nothing is queued for any worker.
    pub fn is_empty(&self) -> bool {
        self.any.is_empty() && self.by_model.is_empty()
    }

    /// The queues with HIGH entries (stale ones included): `None` is the shared one, else
    /// the model's.
    pub fn high_waiting(&self) -> Vec<Option<&str>> {
        let high = |q: &ReadyQueue| q.top_priority() == Some(Priority::High);
        let mut v: Vec<Option<&str>> = self
            .by_model
            .iter()
            .filter(|(_, q)| high(q))
            .map(|(m, _)| Some(m.as_str()))
            .collect();
        if high(&self.any) {
            v.push(None);
        }
        v
    }

    /// Only model queues hold entries: a worker that got nothing does not mean the next
    /// one will not (it may serve other models).
    pub fn only_model_work(&self) -> bool {
        self.any.is_empty() && !self.by_model.is_empty()
    }

    /// [`ReadyQueue::credit`] in the queue of `model` (or the shared one).
    pub fn credit(&mut self, model: Option<&str>, tenant: &str, cost: u64) {
        match model {
            None => self.any.credit(tenant, cost),
            Some(m) => {
                if let Some(q) = self.by_model.get_mut(m) {
                    q.credit(tenant, cost);
                }
            }
        }
    }

    /// [`ReadyQueue::settle`] in every queue.
    pub fn settle(&mut self) {
        self.any.settle();
        for q in self.by_model.values_mut() {
            q.settle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut ReadyQueue, n: usize) -> Vec<String> {
        std::iter::from_fn(|| q.pop(|_| true).map(|i| i.job_id))
            .take(n)
            .collect()
    }

    /// Tenant of a job id "tenant/n".
    fn tenant_of(job: &str) -> &str {
        job.split('/').next().expect("tenant/n")
    }

    fn count(jobs: &[String], tenant: &str) -> usize {
        jobs.iter().filter(|j| tenant_of(j) == tenant).count()
    }

    fn push_n(q: &mut ReadyQueue, tenant: &str, n: usize, cost: u64) {
        for i in 0..n {
            q.push(Priority::Normal, tenant, format!("{tenant}/{i}"), 0, cost);
        }
    }

    #[test]
    fn higher_priority_is_dispatched_first_then_older_first() {
        let mut q = ReadyQueue::default();
        q.push(Priority::Normal, "t", "a".into(), 0, 1);
        q.push(Priority::Low, "t", "b".into(), 0, 1);
        q.push(Priority::High, "t", "c".into(), 0, 1);
        q.push(Priority::Normal, "t", "d".into(), 0, 1);
        assert_eq!(
            drain(&mut q, 10),
            ["c", "a", "d", "b"],
            "priority class, then age"
        );
        assert!(q.is_empty());
    }

    #[test]
    fn priority_class_comes_before_fair_share() {
        let mut q = ReadyQueue::default();
        push_n(&mut q, "heavy", 50, 1);
        drain(&mut q, 50);
        q.push(Priority::Normal, "light", "light/0".into(), 0, 1);
        q.push(Priority::High, "heavy", "heavy/high".into(), 0, 1);
        assert_eq!(drain(&mut q, 2), ["heavy/high", "light/0"]);
    }

    #[test]
    fn a_flooding_tenant_does_not_hold_back_a_small_one() {
        let mut q = ReadyQueue::default();
        push_n(&mut q, "crm", 10_000, 1);
        drain(&mut q, 100);
        push_n(&mut q, "ads", 10, 1);
        let next = drain(&mut q, 20);
        assert_eq!(count(&next, "ads"), 10, "equal weights alternate: {next:?}");
        // Each tenant's own tasks stay in age order.
        let ads: Vec<_> = next.iter().filter(|j| tenant_of(j) == "ads").collect();
        assert_eq!(ads.first().map(|s| s.as_str()), Some("ads/0"));
        assert_eq!(ads.last().map(|s| s.as_str()), Some("ads/9"));
    }

    #[test]
    fn weights_split_the_dispatched_work() {
        let mut q = ReadyQueue::new(TenantWeights::parse(&["ads=3"]).expect("valid"));
        push_n(&mut q, "ads", 1000, 1);
        push_n(&mut q, "crm", 1000, 1);
        let first = drain(&mut q, 400);
        assert_eq!((count(&first, "ads"), count(&first, "crm")), (300, 100));
    }

    #[test]
    fn share_is_by_estimated_work_not_task_count() {
        let mut q = ReadyQueue::default();
        push_n(&mut q, "big", 100, 4);
        push_n(&mut q, "small", 400, 1);
        let first = drain(&mut q, 100);
        assert_eq!((count(&first, "big"), count(&first, "small")), (20, 80));
    }

    #[test]
    fn idle_time_earns_no_credit() {
        let mut q = ReadyQueue::default();
        push_n(&mut q, "early", 1000, 1);
        drain(&mut q, 500);
        push_n(&mut q, "late", 1000, 1);
        let next = drain(&mut q, 100);
        assert!(
            (49..=51).contains(&count(&next, "late")),
            "a newcomer gets its share, not 500 tasks of back pay: {}",
            count(&next, "late")
        );
    }

    #[test]
    fn stale_entries_are_skipped_and_charge_nothing() {
        let mut q = ReadyQueue::default();
        push_n(&mut q, "a", 10, 1);
        push_n(&mut q, "b", 10, 1);
        // Every entry of "a" is stale: popping skips them without charging "a".
        let live = q.pop(|i| tenant_of(&i.job_id) == "b").expect("b is live");
        assert_eq!(live.job_id, "b/0");
        assert_eq!(
            q.len(),
            9,
            "a's 10 stale entries were dropped, b has 9 left"
        );
        push_n(&mut q, "a", 2, 1);
        assert_eq!(
            drain(&mut q, 3),
            ["a/0", "a/1", "b/1"],
            "a was not charged for its stale entries (it would wait behind b's 9 otherwise)"
        );
    }

    #[test]
    fn idle_tenants_are_forgotten() {
        let mut q = ReadyQueue::default();
        for t in 0..100 {
            q.push(Priority::Normal, &format!("t{t}"), format!("t{t}/0"), 0, 1);
        }
        drain(&mut q, 100);
        assert!(q.is_empty());
        assert!(q.tenants.is_empty(), "{} tenants kept", q.tenants.len());
        // Under load, tenants that left are swept once the farm's time passes theirs.
        push_n(&mut q, "busy", 10_000, 1);
        for t in 0..3000 {
            q.push(Priority::Normal, &format!("t{t}"), format!("t{t}/0"), 0, 1);
            drain(&mut q, 2);
        }
        assert!(
            q.tenants.len() < 2 * SWEEP_EVERY as usize,
            "{} tenants kept",
            q.tenants.len()
        );
    }

    #[test]
    fn weights_are_parsed_with_named_errors() {
        let w = TenantWeights::parse(&["ads=3", "crm=1"]).expect("valid");
        assert_eq!((w.get("ads"), w.get("crm"), w.get("other")), (3, 1, 1));
        for (bad, says) in [
            ("ads", "TENANT=WEIGHT"),
            ("ads=0", "1..=1000"),
            ("ads=1001", "1..=1000"),
            ("ads=x", "1..=1000"),
            ("Ads=2", "--tenant-weights: tenant must be"),
        ] {
            let e = TenantWeights::parse(&[bad]).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(
            TenantWeights::from_flag("ads=3, crm=1").expect("valid"),
            w,
            "the flag's comma-separated form"
        );
        assert_eq!(
            TenantWeights::from_flag("").expect("empty"),
            TenantWeights::default()
        );
        let e = TenantWeights::parse(&["a=1", "a=2"]).expect_err("twice");
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn credits_rebuild_the_lead_of_the_tenant_that_was_served() {
        // After a failover: "a" had 10 units of work in this backlog, "b" none.
        let mut q = ReadyQueue::new(TenantWeights::default());
        push_n(&mut q, "a", 10, 1);
        push_n(&mut q, "b", 20, 1);
        q.credit("a", 10);
        q.credit("nobody", 5); // nothing queued: no backlog to weigh
        q.settle();
        let first = drain(&mut q, 10);
        assert_eq!(count(&first, "b"), 10, "b catches up first: {first:?}");
        let next = drain(&mut q, 10);
        assert_eq!(count(&next, "a"), 5, "then they alternate: {next:?}");
        // A tenant arriving now starts level with the backlogged ones, not ahead.
        let mut q = ReadyQueue::new(TenantWeights::default());
        push_n(&mut q, "a", 4, 1);
        q.credit("a", 6);
        q.settle();
        push_n(&mut q, "c", 4, 1);
        let got = drain(&mut q, 4);
        assert!(count(&got, "a") >= 1, "the newcomer gets no burst: {got:?}");
    }

    #[test]
    fn a_worker_gets_the_highest_priority_of_all_its_queues_models_first_on_ties() {
        let mut q = ReadyQueues::new(TenantWeights::default());
        let models = ["small".to_string(), "large".to_string()];
        q.push(
            Some("small"),
            None,
            Priority::Normal,
            "t",
            "small-normal".into(),
            0,
            1,
        );
        q.push(
            Some("large"),
            None,
            Priority::High,
            "t",
            "large-high".into(),
            0,
            1,
        );
        q.push(None, None, Priority::Normal, "t", "any-normal".into(), 0, 1);
        q.push(None, None, Priority::High, "t", "any-high".into(), 0, 1);
        let order: Vec<String> = std::iter::from_fn(|| q.pop_for(&models, |_| true))
            .map(|i| i.job_id)
            .collect();
        assert_eq!(
            order,
            ["large-high", "any-high", "small-normal", "any-normal"],
            "HIGH of the last-listed model first; a model's queue before the shared one at a tie"
        );
    }
}
