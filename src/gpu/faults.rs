//! Faults a `sim` device can be told to inject, at named points of a job: before its copy
//! (`out_of_memory`, `copy_fail`, `slow_copy`), before its kernels (`kernel_fail`, and `panic`:
//! a bug met on one request's data, which is the request's failure and not the device's), or
//! for a while on everything, health checks included (`device_lost`).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    DeviceLost,
    OutOfMemory,
    CopyFail,
    SlowCopy,
    KernelFail,
    Panic,
}

impl FaultKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::DeviceLost => "device_lost",
            Self::OutOfMemory => "out_of_memory",
            Self::CopyFail => "copy_fail",
            Self::SlowCopy => "slow_copy",
            Self::KernelFail => "kernel_fail",
            Self::Panic => "panic",
        }
    }
}

/// One fault to inject, as `POST /api/v1/devices/{id}/faults` takes it.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub fault: FaultKind,
    /// Jobs it hits (copy and kernel faults; default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// `device_lost`: how long the device stays lost, ms (default 500).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// `slow_copy`: how many times slower the copy runs (default 10).
    #[serde(default)]
    pub factor: Option<f64>,
}

fn one() -> u32 {
    1
}

impl FaultSpec {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.count) {
            return Err("count must be 1 to 1000".into());
        }
        if self.duration_ms.is_some_and(|d| d > 600_000) {
            return Err("duration_ms must be at most 600000".into());
        }
        if self.factor.is_some_and(|f| !(f.is_finite() && (1.0..=1000.0).contains(&f))) {
            return Err("factor must be 1 to 1000".into());
        }
        Ok(())
    }
}

/// Where in a job a fault is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Copy,
    Kernel,
}

/// The faults pending on one device.
#[derive(Debug, Default)]
pub struct FaultPlan {
    lost_until: Option<Instant>,
    pending: Vec<(FaultKind, u32, f64)>,
}

/// What a job meets at a point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hit {
    None,
    Fail(FaultKind),
    /// The copy takes this many times longer.
    Slow(f64),
}

impl FaultPlan {
    pub fn inject(&mut self, spec: &FaultSpec, now: Instant) {
        match spec.fault {
            FaultKind::DeviceLost => {
                self.lost_until = Some(now + Duration::from_millis(spec.duration_ms.unwrap_or(500)));
            }
            kind => self.pending.push((kind, spec.count, spec.factor.unwrap_or(10.0))),
        }
    }

    pub fn lost(&mut self, now: Instant) -> bool {
        match self.lost_until {
            Some(t) if now < t => true,
            _ => {
                self.lost_until = None;
                false
            }
        }
    }

    /// The fault a job meets at `point` (a copy point only for a job that copies), used up.
    pub fn hit(&mut self, point: Point, copies: bool, now: Instant) -> Hit {
        if self.lost(now) {
            return Hit::Fail(FaultKind::DeviceLost);
        }
        let applies = |k: FaultKind| match k {
            FaultKind::OutOfMemory | FaultKind::CopyFail | FaultKind::SlowCopy => point == Point::Copy && copies,
            FaultKind::KernelFail | FaultKind::Panic => point == Point::Kernel,
            FaultKind::DeviceLost => false,
        };
        let Some(i) = self.pending.iter().position(|(k, _, _)| applies(*k)) else {
            return Hit::None;
        };
        let (kind, count, factor) = &mut self.pending[i];
        let hit = if *kind == FaultKind::SlowCopy { Hit::Slow(*factor) } else { Hit::Fail(*kind) };
        *count -= 1;
        if *count == 0 {
            self.pending.remove(i);
        }
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(fault: FaultKind, count: u32) -> FaultSpec {
        FaultSpec { fault, count, duration_ms: Some(50), factor: Some(4.0) }
    }

    #[test]
    fn faults_hit_their_point_and_are_used_up() {
        let now = Instant::now();
        let mut p = FaultPlan::default();
        p.inject(&spec(FaultKind::CopyFail, 2), now);
        p.inject(&spec(FaultKind::KernelFail, 1), now);
        assert_eq!(p.hit(Point::Copy, false, now), Hit::None, "a resident job copies nothing");
        assert_eq!(p.hit(Point::Kernel, false, now), Hit::Fail(FaultKind::KernelFail));
        assert_eq!(p.hit(Point::Kernel, false, now), Hit::None);
        assert_eq!(p.hit(Point::Copy, true, now), Hit::Fail(FaultKind::CopyFail));
        assert_eq!(p.hit(Point::Copy, true, now), Hit::Fail(FaultKind::CopyFail));
        assert_eq!(p.hit(Point::Copy, true, now), Hit::None);
        p.inject(&spec(FaultKind::SlowCopy, 1), now);
        assert_eq!(p.hit(Point::Copy, true, now), Hit::Slow(4.0));
    }

    #[test]
    fn a_lost_device_fails_everything_for_a_while() {
        let now = Instant::now();
        let mut p = FaultPlan::default();
        p.inject(&spec(FaultKind::DeviceLost, 1), now);
        assert!(p.lost(now));
        assert_eq!(p.hit(Point::Kernel, false, now), Hit::Fail(FaultKind::DeviceLost));
        assert!(!p.lost(now + Duration::from_millis(51)));
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(spec(FaultKind::CopyFail, 0).validate().is_err());
        assert!(FaultSpec { factor: Some(0.5), ..spec(FaultKind::SlowCopy, 1) }.validate().is_err());
        assert!(spec(FaultKind::SlowCopy, 3).validate().is_ok());
    }
}
