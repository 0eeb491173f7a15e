//! The messages between the functions, and how handling one ends ([`Outcome`]). Every body
//! carries a version `v`; a body that does not parse, has another version or carries ids that
//! cannot be ids is rejected before any AWS call.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::domain::model::{Epoch, Market};

/// Version 2 added `market` (copies can be On-Demand, to hold a group's On-Demand floor) and
/// named the instances by role. Version 1 bodies, still in the queues during an upgrade, read
/// as Spot replacements.
pub const VERSION: u32 = 2;

/// Scanner -> spot-creator: replace this instance of this group with a copy bought in `market`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpotRequest {
    pub v: u32,
    pub group: String,
    #[serde(alias = "on_demand")]
    pub replace: String,
    #[serde(default)]
    pub market: Market,
    /// Until when the scan claimed the instance; with the instance id it names this attempt
    /// (the CreateFleet ClientToken), so a redelivery reuses it and a later attempt does not.
    pub claim: Epoch,
    /// A Spot instance EC2 recommends rebalancing away from, replaced in its own market (an
    /// On-Demand copy when no Spot pool is left) whether or not it is outdated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebalance: bool,
}

/// What a body is about, so that one batch works on it once: the instance a spot request
/// replaces, or the pair a swap exchanges, with its group and market; the whole body for
/// anything else (a malformed body included). Two bodies of one swap can differ (one from the
/// spot-creator, one re-sent by a waiting swapper): worked on at once, both would see the copy
/// outside the group and attach it.
pub fn subject(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.to_string();
    };
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default();
    let (group, market) = (field("group"), field("market"));
    match (field("old"), field("new"), field("replace")) {
        (old, new, _) if !old.is_empty() && !new.is_empty() => format!("swap {group} {old} {new} {market}"),
        (_, _, old) if !old.is_empty() => format!("replace {group} {old} {market}"),
        _ => body.to_string(),
    }
}

/// Spot-creator -> swapper (and swapper -> itself while waiting): swap `new` (a copy bought in
/// `market`) in for `old`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwapRequest {
    pub v: u32,
    pub group: String,
    #[serde(alias = "on_demand")]
    pub old: String,
    #[serde(alias = "spot")]
    pub new: String,
    #[serde(default)]
    pub market: Market,
    /// When the copy was launched, as the spot-creator saw it. While the copy only waits for its
    /// status checks, the swapper then reads its status and nothing else; everything is read
    /// (and checked) before any change. Absent: everything is read at every delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched: Option<Epoch>,
    /// Once the copy is attached and only waits to become healthy behind the group's load
    /// balancers: until when it may (the attach plus the group's health deadline), and which
    /// target groups (ARNs) and Classic Load Balancers (names) to ask. A round then reads their
    /// health and nothing else; everything is read again before any change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_by: Option<Epoch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancers: Vec<String>,
}

impl SpotRequest {
    pub fn new(group: &str, replace: &str, market: Market, claim: Epoch) -> Self {
        Self { v: VERSION, group: group.into(), replace: replace.into(), market, claim, rebalance: false }
    }

    pub fn parse(body: &str) -> Result<Self, String> {
        let m: Self = parse_versioned(body)?;
        check_group(&m.group)?;
        check_instance_id(&m.replace)?;
        Ok(m)
    }

    /// Deterministic per attempt, at most 64 ASCII characters.
    pub fn client_token(&self) -> String {
        format!("aso-{}-{}", self.replace, self.claim)
    }
}

impl SwapRequest {
    pub fn new(group: &str, old: &str, new: &str, market: Market) -> Self {
        Self {
            v: VERSION,
            group: group.into(),
            old: old.into(),
            new: new.into(),
            market,
            launched: None,
            healthy_by: None,
            target_groups: Vec::new(),
            load_balancers: Vec::new(),
        }
    }

    pub fn parse(body: &str) -> Result<Self, String> {
        let m: Self = parse_versioned(body)?;
        check_group(&m.group)?;
        check_instance_id(&m.old)?;
        check_instance_id(&m.new)?;
        if m.old == m.new {
            return Err("old and new are the same instance".into());
        }
        Ok(m)
    }
}

/// How handling one message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Work done (or found already done): the message is deleted.
    Done(String),
    /// Deliberately not done (the group changed, no capacity, ...): deleted, nothing retried.
    Dropped(String),
    /// Bad input (malformed, unknown version, unknown or forged ids): reported as failed so it
    /// reaches the dead-letter queue after the queue's maxReceiveCount. Nothing was changed.
    Rejected(String),
    /// A transient failure (throttling, 5xx): reported as failed, retried after the visibility
    /// timeout, and dead-lettered if it keeps failing.
    Retry(String),
}

impl Outcome {
    pub fn acked(&self) -> bool {
        matches!(self, Outcome::Done(_) | Outcome::Dropped(_))
    }
}

/// Serializes a message body; the types above cannot fail to serialize.
pub fn to_body<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).unwrap_or_default()
}

fn parse_versioned<T: DeserializeOwned>(body: &str) -> Result<T, String> {
    let value: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("body is not JSON: {e}"))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if (1..=u64::from(VERSION)).contains(&v) => {}
        Some(v) => return Err(format!("unknown message version {v} (this code reads versions 1 to {VERSION})")),
        None => return Err("body has no message version \"v\"".into()),
    }
    serde_json::from_value(value).map_err(|e| format!("body is not a valid message: {e}"))
}

/// An EC2 instance id (`i-` and 8 to 17 hex digits), or why not.
pub fn check_instance_id(id: &str) -> Result<(), String> {
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
        let s = SpotRequest::new("web", "i-0123456789abcdef0", Market::OnDemand, 1_700_000_000);
        assert_eq!(SpotRequest::parse(&to_body(&s)), Ok(s.clone()));
        assert!(to_body(&s).contains(r#""market":"on-demand""#));
        assert!(s.client_token().len() <= 64);
        let w = SwapRequest::new("web", "i-0123456789abcdef0", "i-0fedcba9876543210", Market::Spot);
        assert_eq!(SwapRequest::parse(&to_body(&w)), Ok(w));
    }

    #[test]
    fn version_1_bodies_still_read_as_spot_replacements() {
        let s = SpotRequest::parse(r#"{"v":1,"group":"g","on_demand":"i-01234567","claim":5}"#).unwrap();
        assert_eq!((s.replace.as_str(), s.market), ("i-01234567", Market::Spot));
        let w = SwapRequest::parse(r#"{"v":1,"group":"g","on_demand":"i-01234567","spot":"i-0abcdef0"}"#).unwrap();
        assert_eq!((w.old.as_str(), w.new.as_str(), w.market), ("i-01234567", "i-0abcdef0", Market::Spot));
    }

    #[test]
    fn bad_bodies_say_why() {
        let cases = [
            ("not json", "not JSON"),
            (r#"{"group":"g","on_demand":"i-01234567","claim":1}"#, "no message version"),
            (r#"{"v":3,"group":"g","replace":"i-01234567","claim":1}"#, "unknown message version 3"),
            (r#"{"v":2,"group":"g","replace":"i-01234567","market":"reserved","claim":1}"#, "unknown variant"),
            (r#"{"v":1,"group":"g","on_demand":"i-01234567"}"#, "missing field `claim`"),
            (r#"{"v":1,"group":"g","on_demand":"i-01234567","claim":1,"x":1}"#, "unknown field"),
            (r#"{"v":1,"group":"g","on_demand":"sg-01234567","claim":1}"#, "not an EC2 instance id"),
            (r#"{"v":1,"group":"","on_demand":"i-01234567","claim":1}"#, "not an Auto Scaling group name"),
        ];
        for (body, reason) in cases {
            let err = SpotRequest::parse(body).unwrap_err();
            assert!(err.contains(reason), "{body}: {err}");
        }
        let err = SwapRequest::parse(r#"{"v":2,"group":"g","old":"i-01234567","new":"i-01234567"}"#);
        assert!(err.unwrap_err().contains("same instance"));
    }
}
