//! The interruption handler's work on one EventBridge event: an EC2 Spot interruption warning
//! or rebalance recommendation for one of our Spot instances. It backs off the instance's pool
//! and, on a warning, has the group start its replacement at once instead of after the
//! instance dies: through TerminateInstanceInAutoScalingGroup without decrementing when the group
//! has a termination lifecycle hook (so draining runs), else by detaching it without
//! decrementing (load balancers drain it); the next scan terminates the detached instance, if
//! EC2 has not reclaimed it first. On a rebalance recommendation with `RebalanceAction=replace`
//! it launches before it removes: the instance is claimed and replaced through the normal swap
//! (a Spot copy from a pool not backed off, or an On-Demand one when none is left). A copy whose
//! swap is not finished is undone instead: if not attached yet it is terminated; if attached
//! while the instance it replaces is still there, on a warning it is terminated through the
//! group, decrementing if desired is still what its attach made it, so the group ends as it
//! began, and on a recommendation it is marked for its swap to roll it back.

use serde_json::Value;
use tracing::{info, warn};

use crate::actions::{back_off, mark, read_group};
use crate::cloud::{Cloud, InstanceQuery, Outgoing, ANY_STATE, LIVE};
use crate::config::{Config, RebalanceAction};
use crate::domain::model::{
    Attached, Epoch, Group, Hold, Hook, Instance, Market, Netting, Tags, TAG_GROUP, TAG_HOLD, TAG_REBALANCE,
    TAG_REPLACES,
};
use crate::domain::policy::Mode;
use crate::domain::state::GroupState;
use crate::error::AwsError;
use crate::message::{to_body, SpotRequest};
use crate::metrics::{self, Metrics};

pub const WARNING: &str = "EC2 Spot Instance Interruption Warning";
pub const REBALANCE: &str = "EC2 Instance Rebalance Recommendation";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Warning,
    Rebalance,
}

/// The signal and instance id of an EventBridge event from `aws.ec2`, or why it is not one.
pub fn parse(event: &Value) -> Result<(Signal, String), String> {
    if event.get("source").and_then(Value::as_str) != Some("aws.ec2") {
        return Err(format!("source is {}, not aws.ec2", event.get("source").unwrap_or(&Value::Null)));
    }
    let signal = match event.get("detail-type").and_then(Value::as_str) {
        Some(WARNING) => Signal::Warning,
        Some(REBALANCE) => Signal::Rebalance,
        other => return Err(format!("detail-type {other:?} is neither {WARNING:?} nor {REBALANCE:?}")),
    };
    let id = event.pointer("/detail/instance-id").and_then(Value::as_str).unwrap_or_default();
    crate::message::check_instance_id(id).map_err(|why| format!("detail.instance-id: {why}"))?;
    Ok((signal, id.to_string()))
}

/// Handles one event. `Ok` says what was done (or why nothing was: every such case is final);
/// `Err` is a failed AWS call, for Lambda to retry the event.
pub async fn handle<C: Cloud>(
    cloud: &C,
    config: &Config,
    metrics: &Metrics,
    event: &Value,
    now: Epoch,
) -> Result<String, AwsError> {
    let (signal, id) = match parse(event) {
        Ok(parsed) => parsed,
        Err(why) => return Ok(format!("ignored: {why}")),
    };
    if signal == Signal::Rebalance && config.rebalance == RebalanceAction::Ignore {
        return Ok(format!("ignored: rebalance recommendation for {id} (REBALANCE_ACTION=ignore)"));
    }
    let Some(instance) = cloud.instances(&InstanceQuery::Ids(vec![id.clone()]), ANY_STATE).await?.pop() else {
        return Ok(format!("ignored: instance {id} does not exist"));
    };
    let (Some(group_name), Some(_)) = (instance.tag(TAG_GROUP), instance.tag(TAG_REPLACES)) else {
        return Ok(format!("ignored: {id} was not launched by asg-optimizer"));
    };
    if !instance.spot {
        return Ok(format!("ignored: {id} is not a Spot instance"));
    }
    let Some(group) = read_group(cloud, group_name).await? else {
        return Ok(format!("ignored: group {group_name} of {id} does not exist"));
    };
    if !group.opted_in(&config.opt_in_key, &config.opt_in_value) {
        // Opted out while this copy's swap was under way: undo it as below, so that the group is
        // as its operator left it; anything else of an opted-out group is left alone. As below, a
        // recommendation forces nothing out: the swap's own roll-back then ends it.
        if instance.is_live()
            && group.member(&id).is_some_and(|m| !m.lifecycle.is_leaving())
            && group.replaced_still_here(&instance)
        {
            if !undo(cloud, &instance, &group, signal == Signal::Rebalance).await? {
                return Ok(format!(
                    "rebalance recommendation: {id} serves in {group_name}, opted out mid-swap: left running, as \
                     taking it out now would leave {group_name} one short; its swap rolls back or keeps both"
                ));
            }
            let replaced = instance.tag(TAG_REPLACES).unwrap_or_default();
            warn!(asg = %group.name, new = %id, "{group_name} was opted out mid-swap: rolled back, {replaced} kept");
            return Ok(format!(
                "{id} was attached but its swap unfinished in {group_name}, opted out since: rolled back"
            ));
        }
        return Ok(format!("ignored: group {group_name} is not opted in"));
    }
    let replace = signal == Signal::Warning || config.rebalance == RebalanceAction::Replace;
    let az = instance.availability_zone.clone().unwrap_or_default();
    let pool = format!("{}@{az}", instance.instance_type);
    let state = GroupState::read(&group.tags, &config.policy);
    match state.policy.mode {
        Mode::Enabled => {}
        Mode::DryRun => {
            let would = if replace { "back off its pool and hand it back to the group" } else { "back off its pool" };
            info!(asg = %group.name, new = %id, pool = %pool, dry_run = true, "{signal:?} for {id}: would {would}");
            return Ok(format!("dry-run: would {would}"));
        }
        Mode::Disabled => return Ok(format!("ignored: group {group_name} is disabled by tag")),
    }

    back_off(
        cloud,
        config,
        metrics,
        &group.name,
        &state.backoffs,
        &az,
        std::slice::from_ref(&instance.instance_type),
        now,
    )
    .await;
    if !replace {
        return Ok(format!("rebalance recommendation: pool {pool} backed off; {id} left running"));
    }
    if !instance.is_live() {
        return Ok(format!("pool {pool} backed off; {id} is already {}", instance.state));
    }
    let replaced = instance.tag(TAG_REPLACES).unwrap_or_default();
    let swap_unfinished = group.replaced_still_here(&instance);
    let serving = group.member(&id).is_some_and(|m| !m.lifecycle.is_leaving());
    if signal == Signal::Rebalance && serving && !swap_unfinished {
        return replace_before_removing(cloud, config, &group, &instance, now).await;
    }
    let done = match group.member(&id) {
        // Launched but not attached yet: terminate it now, so the swapper cannot attach an
        // instance about to be reclaimed; the instance it was to replace stays.
        None if swap_unfinished => {
            // A record of its attach stays as it is: should the swap attach it in the moment
            // between the read above and this call, it dies in the group, whose own tag on it
            // then says that the +1 of the attach is its swap's to give back (see
            // [`Attached::pending`]); dead outside the group, it counts as never attached.
            cloud.terminate(std::slice::from_ref(&id)).await?;
            format!("{id} was not attached yet: terminated, {replaced} kept")
        }
        // Handed back already (a duplicate event): left to drain; the next scan terminates it.
        None => return Ok(format!("pool {pool} backed off; {id} is not in {group_name} any more")),
        Some(m) if m.lifecycle.is_leaving() => {
            return Ok(format!("pool {pool} backed off; {id} is already {}", m.lifecycle));
        }
        // Attached while the instance it replaces is still there, on a recommendation: the swap
        // rolls the copy back when it reads this mark, right before it would retire that
        // instance. Undone here, the copy could leave with a decrement in the very second the
        // swap retires the instance with another, and the group would serve one short.
        Some(_) if swap_unfinished && signal == Signal::Rebalance => {
            cloud
                .tag_instances(std::slice::from_ref(&id), &Tags::from([(TAG_REBALANCE.to_string(), now.to_string())]))
                .await?;
            return Ok(format!(
                "rebalance recommendation: pool {pool} backed off; {id} is attached and its swap is not over: \
                 marked, its swap rolls it back rather than retire {replaced}"
            ));
        }
        // On a warning there is no time for that: undo the attach, as the swapper's roll-back
        // does, so desired capacity ends where it began.
        Some(_) if swap_unfinished => {
            undo(cloud, &instance, &group, false).await?;
            format!("{id} was attached but its swap unfinished: rolled back, {replaced} kept")
        }
        // Desired capacity stays: the group launches a replacement from its launch template now.
        Some(_) if cloud.lifecycle_hooks(&group.name).await?.contains(&Hook::Terminating) => {
            cloud.terminate_in_group(&id, false).await?;
            format!("{id} terminated through {group_name} (termination hook runs); the group replaces it now")
        }
        Some(_) => {
            // Out of the group, the copy loses the group's tag; a +1 of its attach still to give
            // back must still count once it dies: its record says so first.
            if instance.attached().is_some_and(|r| r.netting.is_none()) {
                mark(cloud, &instance, Some(Netting::Out)).await?;
            }
            cloud.detach(&group.name, &id, false).await?;
            format!("{id} detached from {group_name}; the group replaces it now and the next scan terminates it")
        }
    };
    metrics.incr(metrics::INTERRUPTIONS_HANDLED);
    warn!(asg = %group.name, new = %id, pool = %pool, signal = ?signal, "{done}");
    Ok(done)
}

/// Takes back out an attached copy whose swap is unfinished, as the swapper's roll-back does:
/// decrementing only if desired is still what its attach made it, and never below MinSize.
/// With a younger attach of ours in the group not netted out yet, it cannot tell (attaches are
/// netted youngest first, see [`Attached::younger`]) and, on a warning, there is no time to wait:
/// the copy goes without a decrement, and its swap gives back the +1 later, in turn. With
/// `only_netted` (a recommendation), a copy whose +1 cannot be netted out now stays. The group
/// is read again right before: changed since the caller's read, the copy goes without a
/// decrement (or, with `only_netted`, stays). Whether it was taken out (or is on its way out).
async fn undo<C: Cloud>(cloud: &C, copy: &Instance, group: &Group, only_netted: bool) -> Result<bool, AwsError> {
    let query = InstanceQuery::Tagged { key: TAG_GROUP.into(), value: Some(group.name.clone()) };
    let copies = cloud.instances(&query, ANY_STATE).await?;
    // The group once more, right before the decrement: the reads and the back-off since the
    // first read take a few calls, in which the swap may have retired the instance the copy
    // replaces, with a decrement of its own. Whatever changed, the copy goes without one, as
    // when a younger attach is pending: the group replaces it, and a +1 still owed is its
    // swap's to give back.
    let Some(fresh) = read_group(cloud, &group.name).await? else { return Ok(false) };
    if (fresh.desired, fresh.min) != (group.desired, group.min) || !fresh.replaced_still_here(copy) {
        let serving = fresh.member(&copy.id).is_some_and(|m| !m.lifecycle.is_leaving());
        if serving && !only_netted {
            cloud.terminate_in_group(&copy.id, false).await?;
            let why = "the group changed since the first read (its swap may have retired meanwhile)";
            info!(asg = %group.name, new = %copy.id, "{why}: taken out without a decrement");
        }
        return Ok(!serving || !only_netted);
    }
    let group = &fresh;
    let younger = !Attached::younger(copy, &copies, group).is_empty();
    let decrement = !younger && Attached::decrements(copy, group.desired) && group.desired > group.min;
    if only_netted && !decrement {
        return Ok(false);
    }
    if younger {
        cloud.terminate_in_group(&copy.id, false).await?;
        return Ok(true);
    }
    cloud.terminate_in_group(&copy.id, decrement).await?;
    // After, as the swapper's roll-back does: the copy is reclaimed by EC2 soon anyway.
    if let Err(e) = mark(cloud, copy, Some(Netting::RollBack)).await {
        warn!(error = %e, "could not record the roll-back on the copy; its swap reads desired instead");
    }
    Ok(true)
}

/// A rebalance recommendation with `RebalanceAction=replace`: claim the instance and have the
/// spot-creator replace it through the normal swap, its old instance leaving only once the copy
/// serves. Nothing is started twice: an instance claimed already, or with a copy on its way, is
/// left to that replacement.
async fn replace_before_removing<C: Cloud>(
    cloud: &C,
    config: &Config,
    group: &Group,
    instance: &Instance,
    now: Epoch,
) -> Result<String, AwsError> {
    let id = &instance.id;
    if instance.hold().is_some_and(|h| h.until() > now) {
        return Ok(format!("rebalance recommendation: {id} is claimed or set aside already"));
    }
    let copies =
        cloud.instances(&InstanceQuery::Tagged { key: TAG_REPLACES.into(), value: Some(id.clone()) }, LIVE).await?;
    if copies.iter().any(|c| !c.swap_over()) {
        return Ok(format!("rebalance recommendation: a copy of {id} is on its way already"));
    }
    let claim = now + config.claim_ttl;
    let hold = Hold::Claim { until: claim, same_market: true };
    cloud.tag_instances(std::slice::from_ref(id), &Tags::from([(TAG_HOLD.to_string(), hold.value())])).await?;
    let request = SpotRequest { rebalance: true, ..SpotRequest::new(&group.name, id, Market::Spot, claim) };
    let message =
        Outgoing { body: to_body(&request), delay_seconds: 0, group_id: Some(id.clone()), dedup_id: Some(id.clone()) };
    if cloud.send(&config.spot_queue_url, vec![message]).await? > 0 {
        return Err(AwsError::unanswered("sqs:SendMessageBatch", format!("the replacement of {id} was not accepted")));
    }
    warn!(asg = %group.name, new = %id, "rebalance recommendation: replacing it before it goes");
    Ok(format!("rebalance recommendation: {id} claimed and enqueued for replacement; it leaves once its copy serves"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_read_or_refused() {
        let event = |source: &str, detail_type: &str, id: Value| json!({"source": source, "detail-type": detail_type, "detail": {"instance-id": id, "instance-action": "terminate"}});
        let cases = [
            (event("aws.ec2", WARNING, json!("i-0123456789abcdef0")), Ok(Signal::Warning)),
            (event("aws.ec2", REBALANCE, json!("i-0123456789abcdef0")), Ok(Signal::Rebalance)),
            (event("aws.events", WARNING, json!("i-0123456789abcdef0")), Err("not aws.ec2")),
            (event("aws.ec2", "EC2 Instance State-change Notification", json!("i-01234567")), Err("detail-type")),
            (event("aws.ec2", WARNING, json!("sg-01234567")), Err("not an EC2 instance id")),
            (event("aws.ec2", WARNING, json!(42)), Err("not an EC2 instance id")),
            (json!({}), Err("not aws.ec2")),
        ];
        for (e, want) in cases {
            match (parse(&e), want) {
                (Ok((signal, id)), Ok(s)) => assert_eq!((signal, id.as_str()), (s, "i-0123456789abcdef0")),
                (Err(why), Err(part)) => assert!(why.contains(part), "{why}"),
                (got, want) => panic!("{e}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_sample_events_parse() {
        for (file, want) in
            [("spot-interruption-warning.json", Signal::Warning), ("rebalance-recommendation.json", Signal::Rebalance)]
        {
            let path = format!("{}/../../events/{file}", env!("CARGO_MANIFEST_DIR"));
            let event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            assert_eq!(parse(&event).unwrap().0, want, "{file}");
        }
    }
}
