//! The messages between the functions. Every body carries a version `v`; a body that does not
//! parse, has another version or carries ids that cannot be ids is rejected before any AWS call.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::model::Epoch;

pub const VERSION: u32 = 1;

/// Scanner -> spot-creator: replace this On-Demand instance of this group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpotRequest {
    pub v: u32,
    pub group: String,
    pub on_demand: String,
    /// Until when the scan claimed the instance; with the instance id it names this attempt
    /// (the CreateFleet ClientToken), so a redelivery reuses it and a later attempt does not.
    pub claim: Epoch,
}

/// Spot-creator -> swapper (and swapper -> itself while waiting): swap these two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwapRequest {
    pub v: u32,
    pub group: String,
    pub on_demand: String,
    pub spot: String,
}

impl SpotRequest {
    pub fn new(group: &str, on_demand: &str, claim: Epoch) -> Self {
        Self { v: VERSION, group: group.into(), on_demand: on_demand.into(), claim }
    }

    pub fn parse(body: &str) -> Result<Self, String> {
        let m: Self = parse_versioned(body)?;
        check_group(&m.group)?;
        check_instance_id(&m.on_demand)?;
        Ok(m)
    }

    /// Deterministic per attempt, at most 64 ASCII characters.
    pub fn client_token(&self) -> String {
        format!("aso-{}-{}", self.on_demand, self.claim)
    }
}

impl SwapRequest {
    pub fn new(group: &str, on_demand: &str, spot: &str) -> Self {
        Self { v: VERSION, group: group.into(), on_demand: on_demand.into(), spot: spot.into() }
    }

    pub fn parse(body: &str) -> Result<Self, String> {
        let m: Self = parse_versioned(body)?;
        check_group(&m.group)?;
        check_instance_id(&m.on_demand)?;
        check_instance_id(&m.spot)?;
        if m.spot == m.on_demand {
            return Err("spot and on_demand are the same instance".into());
        }
        Ok(m)
    }
}

/// Serializes a message body; the types above cannot fail to serialize.
pub fn to_body<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).unwrap_or_default()
}

fn parse_versioned<T: DeserializeOwned>(body: &str) -> Result<T, String> {
    let value: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("body is not JSON: {e}"))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => return Err(format!("unknown message version {v} (this code reads version {VERSION})")),
        None => return Err("body has no message version \"v\"".into()),
    }
    serde_json::from_value(value).map_err(|e| format!("body is not a valid message: {e}"))
}

fn check_instance_id(id: &str) -> Result<(), String> {
    let ok = id.strip_prefix("i-").is_some_and(|hex| {
        (8..=17).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(format!("{id:?} is not an EC2 instance id"))
    }
}

fn check_group(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!("{name:?} is not an Auto Scaling group name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let s = SpotRequest::new("web", "i-0123456789abcdef0", 1_700_000_000);
        assert_eq!(SpotRequest::parse(&to_body(&s)), Ok(s.clone()));
        assert!(s.client_token().len() <= 64);
        let w = SwapRequest::new("web", "i-0123456789abcdef0", "i-0fedcba9876543210");
        assert_eq!(SwapRequest::parse(&to_body(&w)), Ok(w));
    }

    #[test]
    fn bad_bodies_say_why() {
        let cases = [
            ("not json", "not JSON"),
            (r#"{"group":"g","on_demand":"i-01234567","claim":1}"#, "no message version"),
            (r#"{"v":2,"group":"g","on_demand":"i-01234567","claim":1}"#, "unknown message version 2"),
            (r#"{"v":1,"group":"g","on_demand":"i-01234567"}"#, "missing field `claim`"),
            (r#"{"v":1,"group":"g","on_demand":"i-01234567","claim":1,"x":1}"#, "unknown field"),
            (r#"{"v":1,"group":"g","on_demand":"sg-01234567","claim":1}"#, "not an EC2 instance id"),
            (r#"{"v":1,"group":"","on_demand":"i-01234567","claim":1}"#, "not an Auto Scaling group name"),
        ];
        for (body, reason) in cases {
            let err = SpotRequest::parse(body).unwrap_err();
            assert!(err.contains(reason), "{body}: {err}");
        }
        let err = SwapRequest::parse(r#"{"v":1,"group":"g","on_demand":"i-01234567","spot":"i-01234567"}"#);
        assert!(err.unwrap_err().contains("same instance"));
    }
}
