//! The spot-creator's work on one message: a fresh check, then exactly one copy of the
//! instance to replace (Spot, from the compatible pools that are not backed off; or On-Demand,
//! to hold the group's On-Demand floor; in the instance's own market when it only runs an
//! outdated configuration), then a swap message.

use tracing::{error, info, warn};

use crate::actions::{
    back_off, compatible_with, current_template, on_error, paused, read_group, record_ids, send_swaps, set_aside,
};
use crate::cloud::{Cloud, InstanceQuery, LIVE, NOT_TERMINATED};
use crate::config::Config;
use crate::domain::drift::{drift, Cause};
use crate::domain::model::{
    rfc3339, Epoch, Hold, Instance, InstanceState, Launch, LaunchResult, LaunchSource, Lifecycle, Market, TAG_GROUP,
    TAG_REPLACES,
};
use crate::domain::pools::{spot_choices, ALL_POOLS};
use crate::domain::state::GroupState;
use crate::message::{Outcome, SpotRequest, SwapRequest};
use crate::metrics::{self, Metrics};

/// EC2 allows 50 tags per resource (`aws:` tags not counted); two are kept free: one for the
/// hold a later scan writes when it replaces the copy in turn (the floor, a rollout), one spare.
const MAX_TAGS: usize = 48;

/// Tags for the copy at launch: ours first (they must never be crowded out), then the replaced
/// instance's own tags as far as the limit allows.
pub fn copy_tags(old: &Instance, group: &str) -> (Vec<(String, String)>, usize) {
    let mut tags = vec![(TAG_GROUP.to_string(), group.to_string()), (TAG_REPLACES.to_string(), old.id.clone())];
    let copyable: Vec<_> = old.copyable_tags().collect();
    let room = MAX_TAGS - tags.len();
    tags.extend(copyable.iter().take(room).map(|(k, v)| (k.to_string(), v.to_string())));
    (tags, copyable.len().saturating_sub(room))
}

pub async fn create_spot<C: Cloud>(cloud: &C, config: &Config, metrics: &Metrics, body: &str, now: Epoch) -> Outcome {
    let req = match SpotRequest::parse(body) {
        Ok(r) => r,
        Err(why) => return Outcome::Rejected(why),
    };
    record_ids(&req.group, &req.replace, None);
    run(cloud, config, metrics, &req, now).await
}

async fn run<C: Cloud>(cloud: &C, config: &Config, metrics: &Metrics, req: &SpotRequest, now: Epoch) -> Outcome {
    let (group_name, old_id, market) = (req.group.as_str(), req.replace.as_str(), req.market);

    let group = match read_group(cloud, group_name).await {
        Ok(Some(g)) => g,
        Ok(None) => return Outcome::Rejected(format!("group {group_name} does not exist")),
        Err(e) => return on_error("could not describe the group", e),
    };

    // The fresh check: everything the scanner saw must still hold.
    if !group.opted_in(&config.opt_in_key, &config.opt_in_value) {
        return Outcome::Dropped(format!(
            "group {group_name} is not opted in ({}={})",
            config.opt_in_key, config.opt_in_value
        ));
    }
    let state = GroupState::read(&group.tags, &config.policy);
    let policy = &state.policy;
    if let Some(outcome) = paused(policy, group_name, &format!("launch a {} copy of {old_id}", market.as_str())) {
        return outcome;
    }
    // A redelivered message finds the copy it launched before and only re-sends the swap.
    let existing = match cloud
        .instances(&InstanceQuery::Tagged { key: TAG_REPLACES.into(), value: Some(old_id.into()) }, LIVE)
        .await
    {
        Ok(found) => found,
        Err(e) => return on_error("could not look for an existing copy", e),
    };
    // (A rebalance replacement may have fallen back to On-Demand.)
    if let Some(copy) = existing
        .iter()
        .filter(|s| (req.rebalance || Market::of(s) == market) && s.tag(TAG_GROUP) == Some(group_name))
        .filter(|s| !s.swap_over())
        .min_by(|a, b| a.id.cmp(&b.id))
    {
        info!(asg = %group_name, old = %old_id, new = %copy.id, "copy already launched; re-sending the swap");
        let copy_market = Market::of(copy);
        return send_swap(cloud, config, req, &copy.id, copy_market, copy.launch_time, "copy already launched").await;
    }

    let old = match cloud.instances(&InstanceQuery::Ids(vec![old_id.into()]), NOT_TERMINATED).await {
        Ok(found) => match found.into_iter().next() {
            Some(i) => i,
            None => return Outcome::Rejected(format!("instance {old_id} does not exist or is terminated")),
        },
        Err(e) => return on_error("could not describe the instance to replace", e),
    };
    if let Some(why) = group.unsupported() {
        return Outcome::Dropped(format!("group {group_name} {why}"));
    }
    let Some(member) = group.member(old_id) else {
        return Outcome::Dropped(format!("{old_id} is not in group {group_name}"));
    };
    if member.lifecycle != Lifecycle::InService {
        return Outcome::Dropped(format!("{old_id} is {}, not InService", member.lifecycle));
    }
    if member.protected_from_scale_in {
        return Outcome::Dropped(format!("{old_id} is protected from scale-in"));
    }
    if old.state != InstanceState::Running {
        return Outcome::Dropped(format!("{old_id} is {}, not running", old.state));
    }
    if let Some(Hold::Skip { until }) = old.hold().filter(|h| h.until() > now) {
        return Outcome::Dropped(format!("{old_id} is set aside until {}", rfc3339(until)));
    }
    let (Some(subnet), Some(az)) = (old.subnet_id.clone(), old.availability_zone.clone()) else {
        return Outcome::Dropped(format!("{old_id} has no subnet (EC2-Classic?)"));
    };
    let LaunchSource::Template { id: template_id, version: template_version } = group.launch.clone() else {
        return Outcome::Dropped(format!("group {group_name} has no launch template"));
    };
    // What the group launches now: needed for an On-Demand copy's type, to confirm that an
    // instance replaced in its own market is still outdated, and to honour a paused rollout.
    let same_market = Market::of(&old) == market;
    let current = if market == Market::OnDemand || same_market || state.rollout_pause.is_some() {
        match current_template(cloud, &group).await {
            Ok(Some(v)) => Some(v),
            Ok(None) => {
                return Outcome::Dropped(format!(
                    "launch template {template_id} version {template_version} of {group_name} does not exist"
                ))
            }
            Err(e) => return on_error("could not read the launch template", e),
        }
    } else {
        None
    };
    if let Some(since) = current.as_ref().and_then(|c| state.paused_since(c)) {
        return Outcome::Dropped(format!(
            "launches for {group_name} are paused since {}: a new instance of its current configuration {}",
            rfc3339(since),
            match state.rollout_pause.as_ref().map(|p| p.cause) {
                Some(Cause::Unserved) => "never served behind its load balancers",
                _ => "failed its status checks",
            }
        ));
    }
    // A rollout replaces an instance in its own market only while it is outdated; a rebalance
    // recommendation, whatever it runs.
    let rollout = same_market && !req.rebalance;
    if rollout && !policy.rollout {
        return Outcome::Dropped(format!("the rollout of {group_name} is disabled; {old_id} kept"));
    }
    if rollout && current.as_ref().and_then(|c| drift(&old, c)).is_none() {
        return Outcome::Dropped(format!(
            "{old_id} is already {} and runs the group's current configuration",
            market.as_str()
        ));
    }
    match cloud.termination_protected(old_id).await {
        Ok(false) => {}
        Ok(true) => {
            return set_aside(cloud, config, old_id, now, format!("{old_id} has API termination protection")).await
        }
        Err(e) => return on_error("could not read termination protection", e),
    }

    // What the template names (an outdated Spot instance may be of another compatible type, or
    // the template may have changed type), else the replaced instance's own type.
    let base_type = current
        .as_ref()
        .filter(|_| market == Market::OnDemand || old.spot)
        .and_then(|c| c.instance_type.clone())
        .unwrap_or_else(|| old.instance_type.clone());
    let (market, instance_types) = match market {
        Market::OnDemand => (market, vec![base_type]),
        Market::Spot => match spot_types(cloud, config, &state, &base_type, &az, now).await {
            Ok(Ok(types)) => (market, types),
            // The instance is at risk where it is: an On-Demand copy rather than none.
            Ok(Err(why)) if req.rebalance => {
                metrics.incr(metrics::FALLBACKS_TO_ON_DEMAND);
                warn!(asg = %group_name, old = %old_id, reason = %why, "no Spot pool for a rebalance replacement; an On-Demand copy");
                (Market::OnDemand, vec![base_type])
            }
            Ok(Err(why)) => {
                metrics.incr(metrics::FALLBACKS_TO_ON_DEMAND);
                warn!(asg = %group_name, old = %old_id, reason = %why, "no Spot pool to try; keeping the instance");
                return set_aside(cloud, config, old_id, now, why).await;
            }
            Err(e) => return on_error("could not describe instance types", e),
        },
    };

    let (tags, dropped_tags) = copy_tags(&old, group_name);
    if dropped_tags > 0 {
        warn!(asg = %group_name, old = %old_id, dropped_tags, "instance has too many tags; some were not copied");
    }
    let mut launch = Launch {
        market,
        template_id,
        template_version,
        instance_types,
        subnet_id: subnet,
        tags,
        client_token: String::new(),
    };
    launch.client_token = launch.token(&req.client_token());
    let pools = format!("{} in {az}", launch.instance_types.join(","));
    match cloud.launch(&launch).await {
        Ok(LaunchResult::Launched { instance_id, instance_type, empty_pools }) => {
            metrics.incr(if market.is_spot() { metrics::SPOT_LAUNCHED } else { metrics::ON_DEMAND_LAUNCHED });
            let pool = format!("{instance_type}@{az}");
            info!(asg = %group_name, old = %old_id, new = %instance_id, pool = %pool, market = market.as_str(), "copy launched");
            if !empty_pools.is_empty() {
                back_off(cloud, config, metrics, group_name, &state.backoffs, &az, &empty_pools, now).await;
            }
            send_swap(cloud, config, req, &instance_id, market, now, "copy launched").await
        }
        Ok(LaunchResult::NoCapacity { code, message }) => {
            metrics.incr(metrics::FALLBACKS_TO_ON_DEMAND);
            warn!(asg = %group_name, old = %old_id, pools = %pools, code = %code, reason = %message, "no capacity; keeping the instance");
            if market.is_spot() {
                back_off(cloud, config, metrics, group_name, &state.backoffs, &az, &[ALL_POOLS.to_string()], now).await;
            }
            set_aside(cloud, config, old_id, now, format!("no {} capacity for {pools}: {code}", market.as_str())).await
        }
        Ok(LaunchResult::Refused { code, message }) => {
            metrics.incr(metrics::FALLBACKS_TO_ON_DEMAND);
            error!(asg = %group_name, old = %old_id, pools = %pools, code = %code, reason = %message, "launch refused; keeping the instance");
            set_aside(cloud, config, old_id, now, format!("launch refused for {pools}: {code}: {message}")).await
        }
        Err(e) => on_error("could not launch the copy", e),
    }
}

/// The Spot types to offer CreateFleet for an instance of `base_type` in `az`: see
/// [`spot_choices`]. `Ok(Err(why))` when there is none.
async fn spot_types<C: Cloud>(
    cloud: &C,
    config: &Config,
    state: &GroupState,
    base_type: &str,
    az: &str,
    now: Epoch,
) -> Result<Result<Vec<String>, String>, crate::error::AwsError> {
    let Some(compatible) = compatible_with(cloud, base_type, config.max_size_factor).await? else {
        return Ok(Err(format!("instance type {base_type} is unknown to DescribeInstanceTypes")));
    };
    Ok(spot_choices(base_type, &compatible, &state.policy, &state.backoffs, az, now))
}

#[allow(clippy::too_many_arguments)]
async fn send_swap<C: Cloud>(
    cloud: &C,
    config: &Config,
    req: &SpotRequest,
    new: &str,
    market: Market,
    launched: Epoch,
    what: &str,
) -> Outcome {
    let swap = SwapRequest { launched: Some(launched), ..SwapRequest::new(&req.group, &req.replace, new, market) };
    match send_swaps(cloud, config, &[swap], config.ready_delay).await {
        Ok(0) => Outcome::Done(format!("{what}: {new}; swap enqueued")),
        Ok(_) => Outcome::Retry(format!("{what}: {new}; the swap message was not accepted")),
        Err(e) => on_error("could not enqueue the swap", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::TAG_HOLD;

    #[test]
    fn copy_tags_keep_ours_and_leave_room_for_a_later_hold() {
        let mut od = Instance { id: "i-00000001".into(), ..Default::default() };
        od.tags.insert("aws:autoscaling:groupName".into(), "web".into());
        od.tags.insert(TAG_HOLD.into(), "claim 5".into());
        for n in 0..60 {
            od.tags.insert(format!("t{n:02}"), "v".into());
        }
        let (tags, dropped) = copy_tags(&od, "web");
        assert_eq!(tags.len(), 48);
        assert_eq!(dropped, 14);
        assert_eq!(tags[0], (TAG_GROUP.to_string(), "web".to_string()));
        assert_eq!(tags[1], (TAG_REPLACES.to_string(), "i-00000001".to_string()));
        assert!(tags.iter().all(|(k, _)| !k.starts_with("aws:") && k != TAG_HOLD));
    }
}
