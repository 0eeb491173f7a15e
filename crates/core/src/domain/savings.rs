//! What the Spot instances we manage save per hour, from current Spot prices per pool and
//! On-Demand prices per type (or from a fixed table the template gives).

use std::collections::BTreeMap;

/// Fixed prices, `type=on_demand:spot` pairs separated by commas (USD per hour), e.g.
/// `m5.large=0.096:0.035,c5.large=0.085:0.031`. When given, no price is looked up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable(pub BTreeMap<String, (f64, f64)>);

impl PriceTable {
    pub fn parse(text: &str) -> Result<PriceTable, String> {
        let mut table = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || format!("{entry:?} is not type=on_demand_price:spot_price");
            let (t, prices) = entry.split_once('=').ok_or_else(bad)?;
            let (od, spot) = prices.split_once(':').ok_or_else(bad)?;
            let (od, spot): (f64, f64) =
                (od.trim().parse().map_err(|_| bad())?, spot.trim().parse().map_err(|_| bad())?);
            if !(od >= 0.0 && spot >= 0.0) {
                return Err(bad());
            }
            table.insert(t.trim().to_string(), (od, spot));
        }
        Ok(PriceTable(table))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Savings of a set of Spot instances, each given as (instance type, Availability Zone).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Savings {
    pub usd_per_hour: f64,
    /// Instances with both prices known, and the rest.
    pub priced: usize,
    pub unpriced: usize,
}

pub fn hourly_savings(
    spots: &[(String, String)],
    on_demand: &BTreeMap<String, f64>,
    spot: &BTreeMap<(String, String), f64>,
) -> Savings {
    let mut s = Savings::default();
    for (t, az) in spots {
        match (on_demand.get(t), spot.get(&(t.clone(), az.clone()))) {
            (Some(od), Some(sp)) => {
                s.usd_per_hour += od - sp;
                s.priced += 1;
            }
            _ => s.unpriced += 1,
        }
    }
    s
}

/// What instances cost per hour, each given as (instance type, Availability Zone, on Spot): an
/// On-Demand instance at its type's price, a Spot one at its pool's. `unpriced` instances are
/// left out of the sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cost {
    pub usd_per_hour: f64,
    pub unpriced: usize,
}

pub fn hourly_cost(
    instances: &[(String, String, bool)],
    on_demand: &BTreeMap<String, f64>,
    spot: &BTreeMap<(String, String), f64>,
) -> Cost {
    let mut c = Cost::default();
    for (t, az, on_spot) in instances {
        let price = if *on_spot { spot.get(&(t.clone(), az.clone())) } else { on_demand.get(t) };
        match price {
            Some(p) => c.usd_per_hour += p,
            None => c.unpriced += 1,
        }
    }
    c
}

/// The table's prices in the shapes [`hourly_savings`] takes: the Spot price applies in any AZ.
pub fn from_table(
    table: &PriceTable,
    spots: &[(String, String)],
) -> (BTreeMap<String, f64>, BTreeMap<(String, String), f64>) {
    let on_demand = table.0.iter().map(|(t, (od, _))| (t.clone(), *od)).collect();
    let spot = spots.iter().filter_map(|(t, az)| Some(((t.clone(), az.clone()), table.0.get(t)?.1))).collect();
    (on_demand, spot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_table_parses_and_rejects_garbage() {
        let t = PriceTable::parse(" m5.large=0.096:0.035, c5.large=0.085:0.031 ,").unwrap();
        assert_eq!(t.0["m5.large"], (0.096, 0.035));
        assert_eq!(t.0.len(), 2);
        assert!(PriceTable::parse("").unwrap().is_empty());
        for bad in ["m5.large", "m5.large=0.1", "m5.large=x:0.1", "m5.large=-1:0.1"] {
            assert!(PriceTable::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cost_prices_each_instance_in_its_market_and_counts_the_unknown() {
        let od = BTreeMap::from([("m5.large".to_string(), 0.096), ("c5.large".to_string(), 0.085)]);
        let spot = BTreeMap::from([(("m5.large".to_string(), "us-east-1a".to_string()), 0.036)]);
        let i = |t: &str, az: &str, on_spot| (t.to_string(), az.to_string(), on_spot);
        let cases = [
            (vec![], 0.0, 0),
            (vec![i("m5.large", "us-east-1a", false), i("c5.large", "us-east-1b", false)], 0.181, 0),
            (vec![i("m5.large", "us-east-1a", true), i("m5.large", "us-east-1a", false)], 0.132, 0),
            // A Spot pool without a price, and a type without any.
            (vec![i("m5.large", "us-east-1b", true), i("t3.nano", "us-east-1a", false)], 0.0, 2),
        ];
        for (instances, usd, unpriced) in cases {
            let c = hourly_cost(&instances, &od, &spot);
            assert!((c.usd_per_hour - usd).abs() < 1e-9 && c.unpriced == unpriced, "{instances:?}: {c:?}");
        }
    }

    #[test]
    fn savings_sum_known_pools_and_count_the_rest() {
        let od = BTreeMap::from([("m5.large".to_string(), 0.096)]);
        let spot = BTreeMap::from([(("m5.large".to_string(), "us-east-1a".to_string()), 0.036)]);
        let spots = vec![
            ("m5.large".to_string(), "us-east-1a".to_string()),
            ("m5.large".to_string(), "us-east-1a".to_string()),
            ("m5.large".to_string(), "us-east-1b".to_string()),
            ("c5.large".to_string(), "us-east-1a".to_string()),
        ];
        let s = hourly_savings(&spots, &od, &spot);
        assert!((s.usd_per_hour - 0.12).abs() < 1e-9, "{s:?}");
        assert_eq!((s.priced, s.unpriced), (2, 2));
    }
}
