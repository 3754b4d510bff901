//! Connecting to the coordinator that leads: `--coordinator` may list several replicas.
//!
//! Each address is asked `AdminService/GetClusterStatus` (which followers answer too); the
//! leader is used at once, a follower's `leader_address` is followed, and an address that
//! does not answer is skipped. A single coordinator without etcd is always the leader.
//!
//! Every request carries the [`Target`]'s API key (`--api-key`, `REELFARM_API_KEY`) as
//! `authorization: Bearer KEY`.

use std::time::Duration;

use anyhow::Context as _;
use reelfarm_proto::v1::{
    self, admin_service_client::AdminServiceClient, job_service_client::JobServiceClient,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

/// The coordinator replicas to reach and the credential to present.
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub addresses: Vec<String>,
    api_key: Option<MetadataValue<Ascii>>,
    /// How `https://` addresses are verified (`--ca-cert`).
    tls: reelfarm_proto::tls::ClientTls,
}

impl Target {
    /// `api_key` is checked here, so a mistyped key fails before anything is sent.
    pub fn new(
        addresses: Vec<String>,
        api_key: Option<&str>,
        ca_cert: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let tls = reelfarm_proto::tls::ClientTls::from_flags(ca_cert, None, None)
            .map_err(anyhow::Error::msg)?;
        let api_key = api_key
            .filter(|k| !k.trim().is_empty())
            .map(|k| {
                let key = reelfarm_proto::auth::ApiKeyToken::parse(k)
                    .map_err(|e| anyhow::anyhow!("--api-key: {e}"))?;
                key.bearer()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--api-key: not ASCII"))
            })
            .transpose()?;
        Ok(Self {
            addresses,
            api_key,
            tls,
        })
    }

    /// One address, no key: the in-process farms of the demo and the benchmarks.
    pub fn local(address: &str) -> Self {
        Self {
            addresses: vec![address.to_string()],
            api_key: None,
            tls: Default::default(),
        }
    }

    fn bearer(&self) -> Bearer {
        Bearer(self.api_key.clone())
    }
}

/// Adds the API key to every request.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request
                .metadata_mut()
                .insert(reelfarm_proto::auth::AUTHORIZATION, v.clone());
        }
        Ok(request)
    }
}

/// A channel to the leader that presents the key.
pub type Conn = InterceptedService<Channel, Bearer>;

/// Per-address connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// While a failover is under way no replica leads for a few seconds: retry this long.
const LEADER_WAIT: Duration = Duration::from_secs(15);
const RETRY: Duration = Duration::from_millis(250);

async fn open(addr: &str, tls: &reelfarm_proto::tls::ClientTls) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(addr.to_string())
        .with_context(|| format!("bad coordinator address {addr:?}"))?
        .connect_timeout(CONNECT_TIMEOUT);
    let endpoint = tls.apply(endpoint, addr).map_err(anyhow::Error::msg)?;
    endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("{addr}: {e}"))
}

/// What one address says about leadership.
enum Probe {
    Leader(Channel),
    Follower(Option<String>),
}

async fn probe(target: &Target, addr: &str, bearer: &Bearer) -> anyhow::Result<Probe> {
    let channel = open(addr, &target.tls).await?;
    let status = AdminServiceClient::with_interceptor(channel.clone(), bearer.clone())
        .get_cluster_status(v1::GetClusterStatusRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{addr}: {}", s.message()))?
        .into_inner();
    Ok(if status.leader {
        Probe::Leader(channel)
    } else {
        Probe::Follower(Some(status.leader_address).filter(|a| !a.is_empty()))
    })
}

/// Opens a channel to the leading coordinator among `addresses` (following a follower's
/// pointer), waiting up to [`LEADER_WAIT`] while none leads.
pub async fn connect(target: &Target) -> anyhow::Result<Channel> {
    let addresses = &target.addresses;
    let bearer = target.bearer();
    anyhow::ensure!(!addresses.is_empty(), "no coordinator address given");
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        let mut last = None;
        for addr in addresses {
            match probe(target, addr, &bearer).await {
                Ok(Probe::Leader(c)) => return Ok(c),
                Ok(Probe::Follower(Some(leader))) => match probe(target, &leader, &bearer).await {
                    Ok(Probe::Leader(c)) => return Ok(c),
                    Ok(Probe::Follower(_)) => {
                        last = Some(anyhow::anyhow!(
                            "{addr} names {leader} as leader, which says it is not"
                        ))
                    }
                    Err(e) => last = Some(e.context(format!("the leader named by {addr}"))),
                },
                Ok(Probe::Follower(None)) => {
                    last = Some(anyhow::anyhow!(
                        "{addr} is a follower and no leader is elected yet"
                    ))
                }
                Err(e) => last = Some(e),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last.unwrap_or_else(|| anyhow::anyhow!("no coordinator answered")));
        }
        tokio::time::sleep(RETRY).await;
    }
}

pub async fn jobs(target: &Target) -> anyhow::Result<JobServiceClient<Conn>> {
    Ok(JobServiceClient::with_interceptor(
        connect(target).await?,
        target.bearer(),
    ))
}

pub async fn admin(target: &Target) -> anyhow::Result<AdminServiceClient<Conn>> {
    Ok(AdminServiceClient::with_interceptor(
        connect(target).await?,
        target.bearer(),
    ))
}
