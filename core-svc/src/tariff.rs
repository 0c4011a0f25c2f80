//! Price estimates: a base fare plus a per-kilometre rate over the great-circle
//! distance from pickup to dropoff, per vehicle type.

use std::collections::BTreeMap;
use std::str::FromStr;

/// The fare rule of one vehicle type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tariff {
    pub base: f64,
    pub per_km: f64,
}

/// `NAME=BASE+PER_KM`, e.g. `car=2.50+1.20`: the form of `--tariff`.
#[derive(Debug, Clone, PartialEq)]
pub struct TariffSpec {
    pub vehicle_type: String,
    pub tariff: Tariff,
}

impl FromStr for TariffSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("tariff {s:?} must look like NAME=BASE+PER_KM, e.g. car=2.50+1.20");
        let (name, rates) = s.split_once('=').ok_or_else(bad)?;
        let (base, per_km) = rates.split_once('+').ok_or_else(bad)?;
        let num = |v: &str| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad());
        }
        Ok(Self {
            vehicle_type: name.to_owned(),
            tariff: Tariff {
                base: num(base).ok_or_else(bad)?,
                per_km: num(per_km).ok_or_else(bad)?,
            },
        })
    }
}

/// The configured tariffs; their names are the known vehicle types.
#[derive(Debug, Clone, PartialEq)]
pub struct Tariffs(BTreeMap<String, Tariff>);

impl Default for Tariffs {
    fn default() -> Self {
        let t = |base, per_km| Tariff { base, per_km };
        Self(BTreeMap::from([
            ("bike".to_owned(), t(1.00, 0.50)),
            ("car".to_owned(), t(2.50, 1.20)),
            ("van".to_owned(), t(4.00, 1.80)),
            ("truck".to_owned(), t(8.00, 3.00)),
        ]))
    }
}

impl Tariffs {
    /// The given tariffs, or the defaults when none are given.
    pub fn from_specs(specs: &[TariffSpec]) -> Self {
        if specs.is_empty() {
            return Self::default();
        }
        Self(
            specs
                .iter()
                .map(|s| (s.vehicle_type.clone(), s.tariff))
                .collect(),
        )
    }

    pub fn get(&self, vehicle_type: &str) -> Option<Tariff> {
        self.0.get(vehicle_type).copied()
    }

    /// The known vehicle types, for error messages.
    pub fn names(&self) -> String {
        self.0.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The fare for `distance_m` metres, rounded to cents.
    pub fn price(tariff: Tariff, distance_m: f64) -> f64 {
        let raw = tariff.base + tariff.per_km * distance_m / 1000.0;
        (raw * 100.0).round() / 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_plus_per_km_rounded_to_cents() {
        let car = Tariffs::default().get("car").unwrap();
        assert_eq!(Tariffs::price(car, 0.0), 2.50);
        assert_eq!(Tariffs::price(car, 10_000.0), 14.50);
        assert_eq!(Tariffs::price(car, 1_234.0), 3.98); // 2.50 + 1.4808
    }

    #[test]
    fn parses_specs() {
        let s: TariffSpec = "tuk-tuk=1.5+0.25".parse().unwrap();
        assert_eq!(s.vehicle_type, "tuk-tuk");
        assert_eq!(
            s.tariff,
            Tariff {
                base: 1.5,
                per_km: 0.25
            }
        );
        for bad in ["car", "car=1", "car=a+1", "=1+1", "car=-1+1", "c r=1+1"] {
            assert!(bad.parse::<TariffSpec>().is_err(), "{bad}");
        }
        let tariffs = Tariffs::from_specs(&[s]);
        assert!(tariffs.get("car").is_none());
        assert_eq!(tariffs.names(), "tuk-tuk");
    }
}
