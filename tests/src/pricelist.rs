//! A stand-in for the AWS Price List API (moto has none): answers `GetProducts` with one product
//! document per requested instance type, and counts the requests it served.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::runtime::{http, read_request};

pub struct FakePriceList {
    pub endpoint: String,
    requests: Arc<AtomicUsize>,
}

impl FakePriceList {
    /// On-Demand USD per hour per instance type.
    pub async fn start(prices: BTreeMap<String, f64>) -> FakePriceList {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let requests = Arc::new(AtomicUsize::new(0));
        let (counter, prices) = (requests.clone(), Arc::new(prices));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counter, prices) = (counter.clone(), prices.clone());
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    while let Some(req) = read_request(&mut stream).await {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let body = answer(&req.body, &prices);
                        let response = http(200, "Content-Type: application/x-amz-json-1.1\r\n", &body);
                        if stream.get_mut().write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakePriceList { endpoint, requests }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn answer(request: &str, prices: &BTreeMap<String, f64>) -> String {
    let request: serde_json::Value = serde_json::from_str(request).unwrap_or_default();
    let wanted = request["Filters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["Field"] == "instanceType")
        .and_then(|f| f["Value"].as_str())
        .unwrap_or_default();
    let documents: Vec<String> = prices
        .get(wanted)
        .map(|usd| {
            serde_json::json!({
                "product": {"productFamily": "Compute Instance", "attributes": {"instanceType": wanted}},
                "terms": {"OnDemand": {"T1": {"priceDimensions": {"T1.D1": {
                    "unit": "Hrs", "pricePerUnit": {"USD": format!("{usd:.10}")}}}}}}
            })
            .to_string()
        })
        .into_iter()
        .collect();
    serde_json::json!({"FormatVersion": "aws_v1", "PriceList": documents}).to_string()
}
