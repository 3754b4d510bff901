//! Small 3-D vector math and exact ray–shape intersections for the guide render.
//!
//! The shapes are the plan's ([`BodyShape`]); this module only casts rays against them.
//! `f32` throughout: the render needs sub-pixel accuracy only (a pixel at 6.5 m is ~1 cm),
//! which `f32` gives with margin.

use std::ops::{Add, Mul, Neg, Sub};

use crate::pipeline::plan::BodyShape;

/// A 3-D vector (metres or directions, world frame unless said).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct V3 {
    pub x: f32,
    pub y: f32,
    pub z: f32,
}

impl V3 {
    /// A vector from its components.
    pub const fn new(x: f32, y: f32, z: f32) -> Self {
        Self { x, y, z }
    }
    /// From an array `[x, y, z]`.
    pub fn from_array(a: [f32; 3]) -> Self {
        Self::new(a[0], a[1], a[2])
    }
    /// Dot product.
    pub fn dot(self, o: V3) -> f32 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }
    /// Cross product.
    pub fn cross(self, o: V3) -> V3 {
        V3::new(
            self.y * o.z - self.z * o.y,
            self.z * o.x - self.x * o.z,
            self.x * o.y - self.y * o.x,
        )
    }
    /// Euclidean length.
    pub fn length(self) -> f32 {
        self.dot(self).sqrt()
    }
    /// Unit vector in the same direction (zero stays zero).
    pub fn normalized(self) -> V3 {
        let l = self.length();
        if l > 0.0 {
            self * (1.0 / l)
        } else {
            self
        }
    }
}

impl Add for V3 {
    type Output = V3;
    fn add(self, o: V3) -> V3 {
        V3::new(self.x + o.x, self.y + o.y, self.z + o.z)
    }
}
impl Sub for V3 {
    type Output = V3;
    fn sub(self, o: V3) -> V3 {
        V3::new(self.x - o.x, self.y - o.y, self.z - o.z)
    }
}
impl Mul<f32> for V3 {
    type Output = V3;
    fn mul(self, s: f32) -> V3 {
        V3::new(self.x * s, self.y * s, self.z * s)
    }
}
impl Neg for V3 {
    type Output = V3;
    fn neg(self) -> V3 {
        V3::new(-self.x, -self.y, -self.z)
    }
}

/// Rotates `v` by the unit quaternion `q = [x, y, z, w]`.
pub fn rotate(q: [f32; 4], v: V3) -> V3 {
    let u = V3::new(q[0], q[1], q[2]);
    let w = q[3];
    // v' = v + 2w(u×v) + 2u×(u×v)
    let t = u.cross(v) * 2.0;
    v + t * w + u.cross(t)
}

/// Rotates `v` by the inverse of the unit quaternion `q`.
pub fn rotate_inv(q: [f32; 4], v: V3) -> V3 {
    rotate([-q[0], -q[1], -q[2], q[3]], v)
}

/// Radius of the sphere around the shape's centre that contains it, for culling.
fn bounding_radius(shape: &BodyShape) -> f32 {
    match *shape {
        BodyShape::Ball { radius } => radius,
        BodyShape::Cuboid { half } => V3::from_array(half).length(),
        BodyShape::Cylinder {
            radius,
            half_height,
        } => (radius * radius + half_height * half_height).sqrt(),
    }
}

/// A ray hit: distance along the ray, world normal, hit point in the body's local frame.
#[derive(Clone, Copy, Debug)]
pub struct Hit {
    pub t: f32,
    pub normal: V3,
    pub local: V3,
}

/// Smallest `t > 0` where the ray `o + t·d` (`d` unit) meets the posed shape.
pub fn intersect(shape: &BodyShape, centre: V3, q: [f32; 4], o: V3, d: V3) -> Option<Hit> {
    // Cheap reject with the bounding sphere first: most rays miss most bodies.
    let oc = o - centre;
    let r = bounding_radius(shape);
    let b = oc.dot(d);
    let c = oc.dot(oc) - r * r;
    if c > 0.0 && (b > 0.0 || b * b < c) {
        return None;
    }
    let lo = rotate_inv(q, oc);
    let ld = rotate_inv(q, d);
    let (t, ln) = match *shape {
        BodyShape::Ball { radius } => sphere(lo, ld, radius)?,
        BodyShape::Cuboid { half } => cuboid(lo, ld, half)?,
        BodyShape::Cylinder {
            radius,
            half_height,
        } => cylinder(lo, ld, radius, half_height)?,
    };
    Some(Hit {
        t,
        normal: rotate(q, ln),
        local: lo + ld * t,
    })
}

fn sphere(o: V3, d: V3, r: f32) -> Option<(f32, V3)> {
    let b = o.dot(d);
    let c = o.dot(o) - r * r;
    let h = b * b - c;
    if h < 0.0 {
        return None;
    }
    let s = h.sqrt();
    let t = if -b - s > 0.0 { -b - s } else { -b + s };
    (t > 0.0).then(|| (t, (o + d * t) * (1.0 / r)))
}

fn cuboid(o: V3, d: V3, half: [f32; 3]) -> Option<(f32, V3)> {
    let (oa, da) = ([o.x, o.y, o.z], [d.x, d.y, d.z]);
    let (mut t_near, mut t_far) = (f32::NEG_INFINITY, f32::INFINITY);
    let mut axis = 0usize;
    let mut sign = 1.0f32;
    for k in 0..3 {
        if da[k].abs() < 1e-12 {
            if oa[k].abs() > half[k] {
                return None;
            }
            continue;
        }
        let inv = 1.0 / da[k];
        let t1 = (-half[k] - oa[k]) * inv;
        let t2 = (half[k] - oa[k]) * inv;
        let (lo, hi) = if t1 < t2 { (t1, t2) } else { (t2, t1) };
        if lo > t_near {
            t_near = lo;
            axis = k;
            sign = -da[k].signum();
        }
        t_far = t_far.min(hi);
    }
    if t_near > t_far || t_near <= 0.0 {
        return None;
    }
    let mut n = [0.0f32; 3];
    n[axis] = sign;
    Some((t_near, V3::from_array(n)))
}

fn cylinder(o: V3, d: V3, r: f32, h: f32) -> Option<(f32, V3)> {
    let mut best: Option<(f32, V3)> = None;
    // Side: x² + z² = r², |y| ≤ h.
    let a = d.x * d.x + d.z * d.z;
    if a > 1e-12 {
        let b = o.x * d.x + o.z * d.z;
        let c = o.x * o.x + o.z * o.z - r * r;
        let disc = b * b - a * c;
        if disc >= 0.0 {
            let t = (-b - disc.sqrt()) / a;
            let y = o.y + d.y * t;
            if t > 0.0 && y.abs() <= h {
                let p = o + d * t;
                best = Some((t, V3::new(p.x / r, 0.0, p.z / r)));
            }
        }
    }
    // Caps: y = ±h, x² + z² ≤ r².
    if d.y.abs() > 1e-12 {
        for cap in [h, -h] {
            let t = (cap - o.y) / d.y;
            let p = o + d * t;
            if t > 0.0 && p.x * p.x + p.z * p.z <= r * r && best.is_none_or(|(bt, _)| t < bt) {
                best = Some((t, V3::new(0.0, cap.signum(), 0.0)));
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: [f32; 4] = [0.0, 0.0, 0.0, 1.0];

    #[test]
    fn ray_hits_each_shape_at_its_near_surface() {
        let o = V3::new(0.0, 0.0, 5.0);
        let d = V3::new(0.0, 0.0, -1.0);
        let shapes = [
            BodyShape::Ball { radius: 0.5 },
            BodyShape::Cuboid {
                half: [0.5, 0.5, 0.5],
            },
            BodyShape::Cylinder {
                radius: 0.5,
                half_height: 0.5,
            },
        ];
        for s in shapes {
            let hit =
                intersect(&s, V3::default(), IDENTITY, o, d).expect("ray through the centre hits");
            assert!(
                (hit.t - 4.5).abs() < 1e-5,
                "{s:?}: hit at t = 4.5, got {}",
                hit.t
            );
            assert!(
                (hit.normal.z - 1.0).abs() < 1e-5,
                "{s:?}: normal faces the ray"
            );
        }
    }

    #[test]
    fn rotation_round_trips() {
        let h = std::f32::consts::FRAC_1_SQRT_2;
        let q = [0.0, h, 0.0, h]; // 90° about y
        let v = V3::new(1.0, 2.0, 3.0);
        let r = rotate(q, v);
        assert!(
            (r.x - 3.0).abs() < 1e-5 && (r.z + 1.0).abs() < 1e-5,
            "90° about y maps x→-z, got {r:?}"
        );
        let back = rotate_inv(q, r);
        assert!(
            (back - v).length() < 1e-5,
            "inverse rotation restores the vector"
        );
    }
}
