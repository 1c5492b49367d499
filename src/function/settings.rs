//! A deployed function's settings against what it holds: the dtype its weights are held in and
//! how it computes are chosen at deploy (they decide what is loaded), so an update may name
//! them only as they are; the view shows them as they are, the package's dtype included when
//! the deploy named none.

use crate::engine::{Compute, Dtype};
use crate::store::FunctionSettings;

/// What a loaded function holds (`None` for a function deployed from a profile alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub dtype: Option<Dtype>,
    pub compute: Option<Compute>,
}

/// `new` as the settings to record in place of `current`, or why not. A `dtype` or `compute`
/// that is not what is held is refused; what is recorded for them stays as it was.
pub fn update(current: &FunctionSettings, held: Held, mut new: FunctionSettings) -> Result<FunctionSettings, String> {
    fn fixed<T: Copy + PartialEq>(
        key: &str,
        asked: Option<T>,
        held: Option<T>,
        name: fn(T) -> &'static str,
    ) -> Result<(), String> {
        match asked {
            Some(a) if Some(a) != held => Err(format!(
                "{key} {} differs from the {} the function holds: {key} is chosen at deploy (undeploy and deploy again)",
                name(a),
                held.map_or("none", name)
            )),
            _ => Ok(()),
        }
    }
    fixed("dtype", new.dtype, held.dtype, Dtype::name)?;
    fixed("compute", new.compute, held.compute, Compute::name)?;
    new.dtype = current.dtype;
    new.compute = current.compute;
    Ok(new)
}

/// The settings as the functions API shows them: the dtype and compute held.
pub fn shown(settings: &FunctionSettings, held: Held) -> FunctionSettings {
    FunctionSettings {
        dtype: held.dtype.or(settings.dtype),
        compute: held.compute.or(settings.compute),
        ..settings.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELD: Held = Held { dtype: Some(Dtype::Bf16), compute: Some(Compute::F32) };

    #[test]
    fn an_update_may_name_what_is_held_and_nothing_else() {
        let current = FunctionSettings::default();
        let new = FunctionSettings { slo_ms: 50.0, ..FunctionSettings::default() };
        assert_eq!(update(&current, HELD, new.clone()).unwrap(), new);
        // Sending back what the view shows is fine, and records nothing new.
        let echoed = shown(&new, HELD);
        assert_eq!(echoed.dtype, Some(Dtype::Bf16));
        assert_eq!(update(&current, HELD, echoed).unwrap(), new);
        for bad in [
            FunctionSettings { dtype: Some(Dtype::F32), ..new.clone() },
            FunctionSettings { compute: Some(Compute::Native), ..new.clone() },
        ] {
            let err = update(&current, HELD, bad).unwrap_err();
            assert!(err.contains("chosen at deploy"), "{err}");
        }
        let profile = Held { dtype: None, compute: None };
        assert!(update(&current, profile, FunctionSettings { dtype: Some(Dtype::F32), ..new }).is_err());
    }
}
