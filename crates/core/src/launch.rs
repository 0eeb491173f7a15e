//! The spot-creator's work on one message: a fresh check, then exactly one Spot copy of the
//! On-Demand instance, then a swap message.

use std::collections::BTreeMap;

use tracing::{error, info, warn};

use crate::batch::Outcome;
use crate::cloud::{Cloud, GroupQuery, InstanceQuery, Outgoing, LIVE, NOT_TERMINATED};
use crate::config::Config;
use crate::error::AwsError;
use crate::message::{to_body, SpotRequest, SwapRequest};
use crate::metrics::{self, Metrics};
use crate::model::{
    rfc3339, Epoch, Hold, Instance, LaunchResult, LaunchSource, SpotLaunch, LIFECYCLE_IN_SERVICE, TAG_GROUP, TAG_HOLD,
    TAG_LAUNCHED_AT, TAG_REPLACES,
};

/// EC2 allows 50 tags per resource.
const MAX_TAGS: usize = 50;

/// Tags for the Spot copy: ours first (they must never be crowded out), then the On-Demand
/// instance's own tags as far as the limit allows.
pub fn spot_tags(od: &Instance, group: &str, now: Epoch) -> (Vec<(String, String)>, usize) {
    let mut tags = vec![
        (TAG_GROUP.to_string(), group.to_string()),
        (TAG_REPLACES.to_string(), od.id.clone()),
        (TAG_LAUNCHED_AT.to_string(), rfc3339(now)),
    ];
    let copyable: Vec<_> = od.copyable_tags().collect();
    let room = MAX_TAGS - tags.len();
    tags.extend(copyable.iter().take(room).map(|(k, v)| (k.to_string(), v.to_string())));
    (tags, copyable.len().saturating_sub(room))
}

/// How a failed AWS call ends the message: a missing id is bad input, anything else is retried
/// (and dead-lettered if it keeps failing).
pub(crate) fn on_error(what: &str, e: AwsError) -> Outcome {
    if e.is_not_found() {
        Outcome::Rejected(format!("{what}: {e}"))
    } else {
        if !e.transient {
            error!(code = e.code(), error = %e, "{what}");
        }
        Outcome::Retry(format!("{what}: {e}"))
    }
}

pub async fn create_spot<C: Cloud>(cloud: &C, config: &Config, metrics: &Metrics, body: &str, now: Epoch) -> Outcome {
    let req = match SpotRequest::parse(body) {
        Ok(r) => r,
        Err(why) => return Outcome::Rejected(why),
    };
    crate::batch::record_ids(&req.group, &req.on_demand, None);
    run(cloud, config, metrics, &req, now).await
}

async fn run<C: Cloud>(cloud: &C, config: &Config, metrics: &Metrics, req: &SpotRequest, now: Epoch) -> Outcome {
    let (group_name, od_id) = (req.group.as_str(), req.on_demand.as_str());

    // A redelivered message finds the copy it launched before and only re-sends the swap.
    let existing = match cloud
        .instances(&InstanceQuery::Tagged { key: TAG_REPLACES.into(), value: Some(od_id.into()) }, LIVE)
        .await
    {
        Ok(found) => found,
        Err(e) => return on_error("could not look for an existing Spot copy", e),
    };
    if let Some(spot) =
        existing.iter().filter(|s| s.spot && s.tag(TAG_GROUP) == Some(group_name)).min_by(|a, b| a.id.cmp(&b.id))
    {
        info!(asg = %group_name, od = %od_id, spot = %spot.id, "Spot copy already launched; re-sending the swap");
        return send_swap(cloud, config, req, &spot.id, "Spot copy already launched").await;
    }

    let od = match cloud.instances(&InstanceQuery::Ids(vec![od_id.into()]), NOT_TERMINATED).await {
        Ok(found) => match found.into_iter().next() {
            Some(i) => i,
            None => return Outcome::Rejected(format!("instance {od_id} does not exist or is terminated")),
        },
        Err(e) => return on_error("could not describe the On-Demand instance", e),
    };
    let group = match cloud.groups(&GroupQuery::Named(vec![group_name.into()])).await {
        Ok(groups) => match groups.into_iter().find(|g| g.name == group_name) {
            Some(g) => g,
            None => return Outcome::Rejected(format!("group {group_name} does not exist")),
        },
        Err(e) => return on_error("could not describe the group", e),
    };

    // The fresh check: everything the scanner saw must still hold.
    if !group.opted_in(&config.opt_in_key, &config.opt_in_value) {
        return Outcome::Dropped(format!(
            "group {group_name} is not opted in ({}={})",
            config.opt_in_key, config.opt_in_value
        ));
    }
    if let Some(why) = group.unsupported() {
        return Outcome::Dropped(format!("group {group_name} {why}"));
    }
    let Some(member) = group.member(od_id) else {
        return Outcome::Dropped(format!("{od_id} is not in group {group_name}"));
    };
    if member.lifecycle != LIFECYCLE_IN_SERVICE {
        return Outcome::Dropped(format!("{od_id} is {}, not InService", member.lifecycle));
    }
    if member.protected_from_scale_in {
        return Outcome::Dropped(format!("{od_id} is protected from scale-in"));
    }
    if od.spot || od.state != "running" {
        return Outcome::Dropped(format!(
            "{od_id} is not a running On-Demand instance ({}, spot={})",
            od.state, od.spot
        ));
    }
    if let Some(Hold::Skip { until }) = od.hold().filter(|h| h.until() > now) {
        return Outcome::Dropped(format!("{od_id} is set aside until {}", rfc3339(until)));
    }
    let Some(subnet) = od.subnet_id.clone() else {
        return Outcome::Dropped(format!("{od_id} has no subnet (EC2-Classic?)"));
    };
    let LaunchSource::Template { id: template_id, version: template_version } = group.launch.clone() else {
        return Outcome::Dropped(format!("group {group_name} has no launch template"));
    };
    match cloud.termination_protected(od_id).await {
        Ok(false) => {}
        Ok(true) => {
            return set_aside(cloud, config, od_id, now, format!("{od_id} has API termination protection")).await
        }
        Err(e) => return on_error("could not read termination protection", e),
    }

    let (tags, dropped_tags) = spot_tags(&od, group_name, now);
    if dropped_tags > 0 {
        warn!(asg = %group_name, od = %od_id, dropped_tags, "On-Demand instance has too many tags; some were not copied");
    }
    let launch = SpotLaunch {
        template_id,
        template_version,
        instance_type: od.instance_type.clone(),
        subnet_id: subnet,
        tags,
        client_token: req.client_token(),
    };
    let pool = format!("{} in {}", launch.instance_type, launch.subnet_id);
    match cloud.launch_spot(&launch).await {
        Ok(LaunchResult::Launched { instance_id }) => {
            metrics.incr(metrics::SPOT_LAUNCHED);
            info!(asg = %group_name, od = %od_id, spot = %instance_id, pool = %pool, "Spot copy launched");
            send_swap(cloud, config, req, &instance_id, "Spot copy launched").await
        }
        Ok(LaunchResult::NoCapacity { code, message }) => {
            metrics.incr(metrics::FALLBACKS_TO_ON_DEMAND);
            warn!(asg = %group_name, od = %od_id, pool = %pool, code = %code, reason = %message, "no Spot capacity; keeping On-Demand");
            set_aside(cloud, config, od_id, now, format!("no Spot capacity for {pool}: {code}")).await
        }
        Ok(LaunchResult::Refused { code, message }) => {
            metrics.incr(metrics::FALLBACKS_TO_ON_DEMAND);
            error!(asg = %group_name, od = %od_id, pool = %pool, code = %code, reason = %message, "Spot launch refused; keeping On-Demand");
            set_aside(cloud, config, od_id, now, format!("Spot launch refused for {pool}: {code}: {message}")).await
        }
        Err(e) => on_error("could not launch the Spot copy", e),
    }
}

async fn send_swap<C: Cloud>(cloud: &C, config: &Config, req: &SpotRequest, spot: &str, what: &str) -> Outcome {
    let message = Outgoing {
        body: to_body(&SwapRequest::new(&req.group, &req.on_demand, spot)),
        delay_seconds: config.ready_delay,
        group_id: None,
        dedup_id: None,
    };
    match cloud.send(&config.swap_queue_url, vec![message]).await {
        Ok(0) => Outcome::Done(format!("{what}: {spot}; swap enqueued")),
        Ok(_) => Outcome::Retry(format!("{what}: {spot}; the swap message was not accepted")),
        Err(e) => on_error("could not enqueue the swap", e),
    }
}

/// Keep the On-Demand instance and leave it alone for a while, so the scanner does not retry it
/// in a loop.
pub(crate) async fn set_aside<C: Cloud>(cloud: &C, config: &Config, od: &str, now: Epoch, why: String) -> Outcome {
    let hold = Hold::Skip { until: now + config.retry_after_failure };
    let tags = BTreeMap::from([(TAG_HOLD.to_string(), hold.value())]);
    if let Err(e) = cloud.tag_instances(&[od.to_string()], &tags).await {
        warn!(od = %od, error = %e, "could not set the instance aside; its claim will expire instead");
    }
    Outcome::Dropped(format!("{why}; {od} kept On-Demand until at least {}", rfc3339(hold.until())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spot_tags_keep_ours_and_fit_the_limit() {
        let mut od = Instance { id: "i-00000001".into(), ..Default::default() };
        od.tags.insert("aws:autoscaling:groupName".into(), "web".into());
        od.tags.insert(TAG_HOLD.into(), "claim 5".into());
        for n in 0..60 {
            od.tags.insert(format!("t{n:02}"), "v".into());
        }
        let (tags, dropped) = spot_tags(&od, "web", 0);
        assert_eq!(tags.len(), MAX_TAGS);
        assert_eq!(dropped, 13);
        assert_eq!(tags[0], (TAG_GROUP.to_string(), "web".to_string()));
        assert_eq!(tags[1], (TAG_REPLACES.to_string(), "i-00000001".to_string()));
        assert_eq!(tags[2], (TAG_LAUNCHED_AT.to_string(), "1970-01-01T00:00:00Z".to_string()));
        assert!(tags.iter().all(|(k, _)| !k.starts_with("aws:") && k != TAG_HOLD));
    }
}
