//! On-Demand prices from the Price List API: the query, the parsing of its product documents,
//! and the cache that keeps a price for a day.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_pricing as pricing;

use super::convert::err;
use crate::cloud::Result;

/// How long a looked-up On-Demand price is reused: they change a few times a year.
pub(super) const PRICE_TTL: Duration = Duration::from_secs(24 * 3600);

/// On-Demand prices already looked up, with when.
pub(super) type PriceCache = Arc<Mutex<BTreeMap<String, (f64, Instant)>>>;

/// The On-Demand price of each of `types` in `region` (Linux, shared tenancy), from the cache or
/// one paginated GetProducts per type.
pub(super) async fn on_demand_prices(
    client: &pricing::Client,
    region: &str,
    cache: &PriceCache,
    types: &[String],
) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for t in types {
        let cached = cache.lock().ok().and_then(|c| c.get(t).copied());
        if let Some((price, _)) = cached.filter(|(_, at)| at.elapsed() < PRICE_TTL) {
            out.insert(t.clone(), price);
            continue;
        }
        let term = |field: &str, value: &str| {
            pricing::types::Filter::builder()
                .r#type(pricing::types::FilterType::TermMatch)
                .field(field)
                .value(value)
                .build()
                .expect("field, type and value are set")
        };
        let mut pages = client
            .get_products()
            .service_code("AmazonEC2")
            .filters(term("instanceType", t))
            .filters(term("regionCode", region))
            .filters(term("operatingSystem", "Linux"))
            .filters(term("tenancy", "Shared"))
            .filters(term("preInstalledSw", "NA"))
            .filters(term("capacitystatus", "Used"))
            .filters(term("licenseModel", "No License required"))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(err("pricing:GetProducts"))?;
            if let Some(price) = page.price_list().iter().find_map(|doc| on_demand_price(doc)) {
                out.insert(t.clone(), price);
                if let Ok(mut cache) = cache.lock() {
                    cache.insert(t.clone(), (price, Instant::now()));
                }
                break;
            }
        }
    }
    Ok(out)
}

/// The hourly USD price in one Price List API product document (`GetProducts` PriceList entry).
pub fn on_demand_price(document: &str) -> Option<f64> {
    let doc: serde_json::Value = serde_json::from_str(document).ok()?;
    let terms = doc.get("terms")?.get("OnDemand")?.as_object()?;
    terms.values().find_map(|term| {
        term.get("priceDimensions")?.as_object()?.values().find_map(|d| {
            let unit = d.get("unit").and_then(|u| u.as_str()).unwrap_or("Hrs");
            let usd: f64 = d.get("pricePerUnit")?.get("USD")?.as_str()?.parse().ok()?;
            (unit.eq_ignore_ascii_case("Hrs") && usd > 0.0).then_some(usd)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_demand_price_is_read_from_a_price_list_document() {
        let doc = r#"{"product":{"attributes":{"instanceType":"m5.large"}},"terms":{"OnDemand":{"X.JRTCKXETXF":{
            "priceDimensions":{"X.JRTCKXETXF.6YS6EN2CT7":{"unit":"Hrs","pricePerUnit":{"USD":"0.0960000000"}}}}}}}"#;
        assert_eq!(on_demand_price(doc), Some(0.096));
        assert_eq!(on_demand_price(r#"{"terms":{}}"#), None);
        assert_eq!(on_demand_price("not json"), None);
    }
}
