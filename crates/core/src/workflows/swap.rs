//! The swapper's work on one message: swap a copy (Spot, or On-Demand for the floor) in for the
//! instance it replaces. Each step re-reads what it depends on, so the message can be delivered
//! any number of times, or resumed after a crash, and do each change once:
//! verify -> wait for readiness (by re-enqueueing, never sleeping) -> wait for the group's turn
//! -> record the attach on the copy -> check the turn again -> read the group again -> make room
//! -> attach -> wait until it is InService and healthy behind every load balancer of the group
//! -> retire the replaced instance through the group -> put MaxSize back.
//!
//! One attach of ours at a time per group (see [`Attached::holds_turn`]), so that desired
//! capacity moves by our hand for one swap only. Desired capacity: the copy records the desired
//! capacity its attach produces. The retire
//! decrements only if desired is still exactly that (a scaling action or an operator that moved it
//! meanwhile keeps their value, and the group launches what it asks for); when the copy or the
//! instance it replaces leaves by another path, the swap gives back its own +1, once the group has
//! settled, and nothing else.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use tracing::{info, warn};

use crate::actions::{
    current_template, gone_dry, mark, on_error, paused, put_max_back, read_group, record_ids, send_swaps, set_aside,
    set_max_recorded,
};
use crate::cloud::{Cloud, InstanceQuery, ANY_STATE, LIVE};
use crate::config::Config;
use crate::domain::drift::{drift, fingerprint, pause_value, Cause, TAG_ROLLOUT_PAUSED};
use crate::domain::housekeeping::busy;
use crate::domain::model::{
    Activity, Attached, Epoch, Group, Health, Hook, Instance, Lifecycle, Market, MaxRaise, Netting, Tags, TAG_ATTACHED,
    TAG_GROUP, TAG_ORIGINAL_MAX, TAG_REBALANCE, TAG_REPLACES, TAG_SWAP_UNDER_WAY,
};
use crate::domain::policy::{Mode, Policy};
use crate::domain::state::GroupState;
use crate::message::{Outcome, SwapRequest};
use crate::metrics::{self, Metrics};

/// Seconds between two looks at a group in dry-run by a swap past its attach.
const DRY_RUN_WAIT: i32 = 300;

pub async fn swap<C: Cloud>(cloud: &C, config: &Config, metrics: &Metrics, body: &str, now: Epoch) -> Outcome {
    let req = match SwapRequest::parse(body) {
        Ok(r) => r,
        Err(why) => return Outcome::Rejected(why),
    };
    record_ids(&req.group, &req.old, Some(&req.new));
    // Until this delivery reads the group, the message says whether the swap is past its attach:
    // only a swap that has attached (or may have) re-sends itself to read everything again.
    let past_attach = req.launched.is_none() || req.healthy_by.is_some();
    let swap =
        Swap { cloud, config, metrics, req: &req, now, past_attach: past_attach.into(), transient: false.into() };
    match swap.run().await {
        // A swap past its attach has a +1 in the group that only it nets out: a failure the
        // service may not repeat (throttling, a 5xx) re-sends it, its receive count starting
        // again, rather than letting it reach the dead-letter queue while the +1 stays.
        Outcome::Retry(why) if swap.past_attach.load(Relaxed) && swap.transient.load(Relaxed) => {
            swap.later(&format!("{why}; past the attach, trying again"), &swap.full_read()).await
        }
        outcome => outcome,
    }
}

fn not_ready(id: &str, h: &Health) -> String {
    format!("{id} has not passed its status checks (state {}, system {}, instance {})", h.state, h.system, h.instance)
}

/// The state reason of a Spot instance EC2 reclaimed.
const SPOT_RECLAIMED: &str = "Server.SpotInstanceTermination";

/// Target-group states and Classic Load Balancer states that mean the copy serves.
const HEALTHY: &str = "healthy";
const IN_SERVICE: &str = "InService";

struct Swap<'a, C> {
    cloud: &'a C,
    config: &'a Config,
    metrics: &'a Metrics,
    req: &'a SwapRequest,
    now: Epoch,
    /// The copy is attached, or its attach is being made or may have been made.
    past_attach: AtomicBool,
    /// A call failed in a way the service may not repeat.
    transient: AtomicBool,
}

impl<C: Cloud> Swap<'_, C> {
    /// [`on_error`], noting a transient failure.
    fn failed(&self, what: &str, e: crate::error::AwsError) -> Outcome {
        if e.transient {
            self.transient.store(true, Relaxed);
        }
        on_error(what, e)
    }

    async fn run(&self) -> Outcome {
        let SwapRequest { group: group_name, old: od, new: spot_id, market, .. } = self.req;
        // While the copy only waits (for its status checks, or to become healthy behind the load
        // balancers) and its deadline is not near, that is all there is to read; everything else
        // is read before any change. A forged message gains nothing here: this reads, and
        // re-sends itself.
        let mut checked = None;
        let mut healthy_behind = None;
        if self.req.healthy_by.is_some_and(|t| self.now < t) {
            let copy = std::slice::from_ref(spot_id);
            match self.unhealthy(&self.req.target_groups, &self.req.load_balancers, copy).await {
                Ok(Some(why)) => return self.later(&why, self.req).await,
                Ok(None) => healthy_behind = Some((&self.req.target_groups, &self.req.load_balancers)),
                Err(e) if e.is_not_found() => {}
                Err(e) => return self.failed("could not read the copy's health behind its load balancers", e),
            }
        } else if self.req.launched.is_some_and(|t| self.now < t + self.config.ready_deadline) {
            match self.cloud.health(std::slice::from_ref(spot_id)).await {
                Ok(mut found) => match found.remove(spot_id) {
                    Some(h) if h.state.is_live() && !h.passed() => {
                        return self.later(&not_ready(spot_id, &h), self.req).await
                    }
                    other => checked = other,
                },
                Err(e) if e.is_not_found() => {}
                Err(e) => return self.failed("could not read the copy's status", e),
            }
        }
        let spot = match self.cloud.instances(&InstanceQuery::Ids(vec![spot_id.clone()]), ANY_STATE).await {
            Ok(found) => match found.into_iter().next() {
                Some(s) => s,
                None => return Outcome::Rejected(format!("instance {spot_id} does not exist")),
            },
            Err(e) => return self.failed("could not describe the copy", e),
        };
        // A forged or mixed-up message names an instance we did not launch for this pair.
        if Market::of(&spot) != *market
            || spot.tag(TAG_REPLACES) != Some(od.as_str())
            || spot.tag(TAG_GROUP) != Some(group_name.as_str())
        {
            return Outcome::Rejected(format!(
                "{spot_id} is not a {} copy launched by asg-optimizer to replace {od} in {group_name}; nothing changed",
                market.as_str()
            ));
        }
        let group = match self.group().await {
            Ok(Some(g)) => g,
            Ok(None) => {
                return Outcome::Dropped(format!("group {group_name} is gone; the scanner will clean up {spot_id}"))
            }
            Err(outcome) => return outcome,
        };
        let attached = group.member(spot_id).is_some();
        // A copy that died after its attach, or that the interruption handler handed back
        // (`out`: detached, it may run on for a minute), is no longer a member, but the +1 of its
        // attach stays in desired until its swap gives it back.
        let handed_back = !attached && spot.attached().is_some_and(|r| r.netting == Some(Netting::Out));
        let died_attached = (!spot.is_live() || handed_back) && Attached::pending(&spot, &group);
        self.past_attach.store(attached || died_attached, Relaxed);
        if !group.opted_in(&self.config.opt_in_key, &self.config.opt_in_value) {
            // Opted out mid-swap: nothing goes on, and a copy already attached comes back out
            // (or, dead, its +1), so that the group is as its operator left it.
            if attached && spot.is_live() && group.replaced_still_here(&spot) {
                return self.roll_back(&spot, &group, format!("group {group_name} was opted out mid-swap")).await;
            }
            // The instance it replaces left by another path: nothing to roll back, and the +1
            // of the attach is given back once the group has settled, as in an opted-in group.
            if attached && spot.is_live() && Attached::pending(&spot, &group) {
                let what = format!("group {group_name} was opted out mid-swap, and {od} has left it");
                return self.settle(&spot, &group, what).await;
            }
            if died_attached {
                return self.copy_gone(&spot, &group).await;
            }
            return Outcome::Dropped(format!(
                "group {group_name} is no longer opted in; the scanner will clean up {spot_id}"
            ));
        }
        // Dry-run changes nothing; a disabled group starts nothing new, but a swap already past
        // its attach is finished, so that no extra instance is left in the group.
        let policy = GroupState::read(&group.tags, &self.config.policy).policy;
        if policy.mode == Mode::DryRun && (attached || died_attached) {
            return self.wait_out_dry_run(group_name, &format!("finish the swap of {od} for {spot_id}")).await;
        }
        if policy.mode == Mode::DryRun || (policy.mode == Mode::Disabled && !attached && !died_attached) {
            if let Some(outcome) = paused(&policy, group_name, &format!("swap {spot_id} in for {od}")) {
                return outcome;
            }
        }
        if !spot.is_live() || handed_back {
            return self.copy_gone(&spot, &group).await;
        }
        if attached {
            // Attached by an earlier delivery: resume after the attach, with the group just read.
            let healthy = healthy_behind.is_some_and(|(t, l)| *t == group.target_groups && *l == group.load_balancers);
            return self.finish(&spot, group, &policy, healthy).await;
        }
        self.attach(&spot, group, &policy, checked).await
    }

    async fn group(&self) -> Result<Option<Group>, Outcome> {
        read_group(self.cloud, &self.req.group).await.map_err(|e| self.failed("could not describe the group", e))
    }

    /// Why one of `ids` does not serve yet behind these target groups and Classic Load
    /// Balancers, if one does not (`None`: each is healthy in every one, or there are none).
    async fn unhealthy(
        &self,
        target_groups: &[String],
        load_balancers: &[String],
        ids: &[String],
    ) -> Result<Option<String>, crate::error::AwsError> {
        for tg in target_groups {
            let mut states = self.cloud.target_health(tg, ids).await?;
            for id in ids {
                let state = states.remove(id);
                if state.as_deref() != Some(HEALTHY) {
                    let state = state.as_deref().unwrap_or("not registered");
                    return Ok(Some(format!("{id} is {state} in target group {tg}")));
                }
            }
        }
        for lb in load_balancers {
            let mut states = self.cloud.load_balancer_health(lb, ids).await?;
            for id in ids {
                let state = states.remove(id);
                if state.as_deref() != Some(IN_SERVICE) {
                    let state = state.as_deref().unwrap_or("not registered");
                    return Ok(Some(format!("{id} is {state} in load balancer {lb}")));
                }
            }
        }
        Ok(None)
    }

    /// `checked`: the copy's status as this delivery has read it already, if it has.
    async fn attach(&self, spot: &Instance, group: Group, policy: &Policy, checked: Option<Health>) -> Outcome {
        let (od, spot_id) = (&self.req.old, &self.req.new);
        let Some(member) = group.member(od) else {
            return Outcome::Dropped(format!(
                "{od} is no longer in {}; the scanner will clean up {spot_id}",
                group.name
            ));
        };
        if member.protected_from_scale_in {
            return self.abandon(spot, format!("{od} is now protected from scale-in")).await;
        }
        // Why not now, and whether it is the copy's own status checks.
        let wait = if member.lifecycle != Lifecycle::InService {
            Some((format!("{od} is {}", member.lifecycle), false))
        } else if let Some(why) = group.unsupported() {
            Some((format!("group {why}"), false))
        } else {
            let health = match checked {
                Some(h) => Some(h),
                None => match self.cloud.health(std::slice::from_ref(spot_id)).await {
                    Ok(mut found) => found.remove(spot_id),
                    Err(e) => return self.failed("could not read the copy's status", e),
                },
            };
            match health {
                Some(h) if h.passed() => None,
                Some(h) => Some((not_ready(spot_id, &h), true)),
                None => Some((format!("{spot_id} has no status yet"), true)),
            }
        };
        let past_deadline = self.now >= spot.launch_time + self.config.ready_deadline;
        if let Some((why, checks)) = wait {
            if past_deadline {
                // Only a copy that failed its own checks says anything about its configuration.
                if checks {
                    self.pause(spot, &group, Cause::Checks).await;
                }
                return self
                    .abandon(spot, format!("not ready {} s after launch: {why}", self.config.ready_deadline))
                    .await;
            }
            return self.later(&why, &self.waiting_for_checks(spot)).await;
        }
        if past_deadline {
            // The scanner may take it for an orphan from its own deadline on: never attach it.
            return self.abandon(spot, format!("ready only {} s after launch", self.now - spot.launch_time)).await;
        }
        // One attach of ours at a time per group (see [`Attached::holds_turn`]).
        match self.turn_taken(spot_id, &group).await {
            Ok(None) => {}
            Ok(Some((why, _))) => return self.later(&why, &self.waiting_for_checks(spot)).await,
            Err(e) => return self.failed("could not read the group's other copies", e),
        }
        // An attached instance skips the group's launch hooks: a fresh look, unless the group's
        // policy says they do nothing a copy needs.
        if !policy.ignore_launch_hooks {
            match self.cloud.lifecycle_hooks(&group.name).await {
                Ok(hooks) if hooks.contains(&Hook::Launching) => {
                    return self
                        .abandon(
                            spot,
                            format!(
                                "group {} has a launch lifecycle hook, which an attached instance skips",
                                group.name
                            ),
                        )
                        .await
                }
                Ok(_) => {}
                Err(e) => return self.failed("could not read the group's lifecycle hooks", e),
            }
        }

        // What this attach produces, on the copy, before the attach: see the module documentation.
        // Written before the turn is taken for good: two swaps that both found the group free
        // each see the other's record now, and both take theirs back and wait, rather than both
        // attaching.
        let record = Attached { at: self.now, desired: group.desired + 1, netting: None };
        let tag = Tags::from([(TAG_ATTACHED.to_string(), record.value())]);
        if let Err(e) = self.cloud.tag_instances(std::slice::from_ref(spot_id), &tag).await {
            return self.failed("could not record the attach on the copy", e);
        }
        let mut recorded = spot.clone();
        recorded.tags.extend(tag);
        let spot = &recorded;
        match self.turn_taken(spot_id, &group).await {
            Ok(None) => {}
            Ok(Some((why, rival))) => {
                // Not made: the record says so, so that the copy's death does not read as an
                // attach's +1 to give back.
                if let Err(e) = mark(self.cloud, spot, Some(Netting::Waiting)).await {
                    return self.failed("could not record on the copy that it waits for its turn", e);
                }
                // Two swaps that recorded at once both wait: the one recorded first (by time,
                // then id, as [`Attached::younger`] orders) comes back first, and takes the turn.
                let first = rival.is_some_and(|(at, id)| (record.at, spot_id.as_str()) < (at, id.as_str()));
                let delay = if first { 1 } else { 2 * self.config.ready_delay };
                return self.later_in(&why, &self.waiting_for_checks(spot), delay).await;
            }
            Err(e) => return self.failed("could not read the group's other copies", e),
        }

        // The group once more, right before the room is made and the attach: the raise is made
        // from its MaxSize (never one someone else set since the first read), and desired
        // capacity moved by someone else since then is counted in the record now, leaving only
        // the calls of the raise and the attach in which their change cannot be told from ours
        // (see below).
        let fresh = match self.group().await {
            Ok(Some(g)) => g,
            Ok(None) => return Outcome::Dropped(format!("group {} vanished before the attach", self.req.group)),
            Err(outcome) => return outcome,
        };
        if fresh.member(spot_id).is_some() {
            // Attached meanwhile by another delivery of this message.
            self.past_attach.store(true, Relaxed);
            return self.finish(spot, fresh, policy, false).await;
        }
        // Opted out, or gone to dry-run or disabled, since the first read: no attach. The record
        // says the swap is over, and the scanner cleans up the copy (in dry-run, once the group
        // leaves it).
        let now_policy = GroupState::read(&fresh.tags, &self.config.policy).policy;
        let stopped = match fresh.opted_in(&self.config.opt_in_key, &self.config.opt_in_value) {
            false => Some(Outcome::Dropped(format!(
                "group {} is no longer opted in; the scanner will clean up {spot_id}",
                fresh.name
            ))),
            true => paused(&now_policy, &fresh.name, &format!("swap {spot_id} in for {od}")),
        };
        if let Some(outcome) = stopped {
            if let Err(e) = mark(self.cloud, spot, Some(Netting::Over)).await {
                return self.failed("could not record on the copy that it is not attached", e);
            }
            return outcome;
        }
        let mut recorded = spot.clone();
        if fresh.desired + 1 != record.desired {
            let record = Attached { desired: fresh.desired + 1, ..record };
            let tag = Tags::from([(TAG_ATTACHED.to_string(), record.value())]);
            if let Err(e) = self.cloud.tag_instances(std::slice::from_ref(spot_id), &tag).await {
                return self.failed("could not record the attach on the copy", e);
            }
            recorded.tags.extend(tag);
        }
        let spot = &recorded;
        // Mark the group first: a swap of ours may be attached here from now on, which lets a
        // later step finish or undo it even if the group is opted out meanwhile. Then make room:
        // AttachInstances fails when desired + 1 > MaxSize; what we raise is recorded in the same
        // call, before the raise, so a crash here can be repaired by a scan.
        let state = GroupState::read(&fresh.tags, &self.config.policy);
        let mut marker = Tags::new();
        if !state.swap_marked {
            marker.insert(TAG_SWAP_UNDER_WAY.to_string(), self.now.to_string());
        }
        if fresh.desired + 1 > fresh.max {
            let (previous, to) = (state.original_max.clone().and_then(Result::ok), fresh.desired + 1);
            let record = MaxRaise::next(previous, fresh.max, to);
            if let Err(e) = set_max_recorded(self.cloud, &fresh.name, previous, record, to, marker).await {
                return self.failed("could not mark the group and raise MaxSize before the attach", e);
            }
            info!(asg = %fresh.name, from = fresh.max, to, "raised MaxSize to attach");
        } else if !marker.is_empty() {
            if let Err(e) = self.cloud.tag_group(&fresh.name, &marker).await {
                return self.failed("could not mark the group before the attach", e);
            }
        }
        self.past_attach.store(true, Relaxed);
        if let Err(e) = self.cloud.attach(&group.name, std::slice::from_ref(spot_id)).await {
            // A concurrent delivery may have attached it: the fresh read decides.
            warn!(code = e.code(), error = %e, "attach failed; re-reading the group");
            let fresh = match self.group().await {
                Ok(Some(g)) => g,
                Ok(None) => return Outcome::Dropped(format!("group {} vanished", self.req.group)),
                Err(outcome) => return outcome,
            };
            if fresh.member(spot_id).is_none() {
                if e.transient {
                    return self.failed("could not attach the copy", e);
                }
                if e.code() == "ValidationError" && fresh.desired + 1 > fresh.max {
                    // The group changed under us (it scaled out to its MaxSize): not a refusal
                    // of the copy. The next delivery reads it again and makes room again.
                    return self.later(&format!("the attach found {} at its MaxSize: {e}", fresh.name), self.req).await;
                }
                // Refused (AMI gone, AZ not in the group, ...): retrying will not help.
                return self.abandon(spot, format!("attach refused: {e}")).await;
            }
            return self.finish(spot, fresh, policy, false).await;
        }
        let group = match self.group().await {
            Ok(Some(g)) => g,
            Ok(None) => return Outcome::Dropped(format!("group {} vanished after attach", self.req.group)),
            Err(outcome) => return outcome,
        };
        info!(asg = %group.name, spot = %spot_id, desired = group.desired, "attached");
        // Desired capacity other than the record says (one above the value read right before):
        // someone else set it in the seconds of the raise and the attach, and no read tells
        // whether before it (their value then has our +1 on top) or after it (their value counts
        // the copy in). The record stays, so [`Self::finish`] keeps both instances and the swap
        // gives nothing back: at worst the group keeps one instance more than they asked for,
        // where taking their change for ours would take one away from them.
        self.finish(spot, group, policy, false).await
    }

    /// The copy is in the group: once it is InService and healthy behind every load balancer of
    /// the group, retire the replaced instance. `group` was read after the attach; `healthy`:
    /// this delivery found the copy healthy behind exactly the group's load balancers already.
    async fn finish(&self, spot: &Instance, group: Group, policy: &Policy, healthy: bool) -> Outcome {
        let (od, spot_id) = (&self.req.old, &self.req.new);
        // The group read after the attach may show it gone to dry-run meanwhile: from there on,
        // nothing changes until it leaves dry-run.
        if GroupState::read(&group.tags, &self.config.policy).policy.mode == Mode::DryRun {
            return self.wait_out_dry_run(&group.name, &format!("finish the swap of {od} for {spot_id}")).await;
        }
        let Some(spot_member) = group.member(spot_id) else {
            return Outcome::Retry(format!("{spot_id} is not in {} right after attach", group.name));
        };
        let record = spot.attached();
        if spot.swap_over() {
            return Outcome::Done(format!("the swap of {od} for {spot_id} is over"));
        }
        if spot_member.lifecycle.is_leaving() {
            return self.settle(spot, &group, format!("{spot_id} is {} in the group", spot_member.lifecycle)).await;
        }
        let attached_at = record.map_or(spot.launch_time, |r| r.at);
        let healthy_by = attached_at + policy.healthy_deadline;
        if spot_member.lifecycle != Lifecycle::InService {
            if self.now >= healthy_by {
                self.pause(spot, &group, Cause::Unserved).await;
                return self
                    .roll_back(spot, &group, format!("{spot_id} still {} after attach", spot_member.lifecycle))
                    .await;
            }
            return self
                .later(&format!("{spot_id} is {} in the group", spot_member.lifecycle), &self.full_read())
                .await;
        }
        match group.member(od) {
            None => return self.settle(spot, &group, format!("{od} already left {}", group.name)).await,
            Some(m) if m.lifecycle.is_leaving() => {
                return self.settle(spot, &group, format!("{od} is already {}", m.lifecycle)).await
            }
            Some(m) if m.lifecycle != Lifecycle::InService || m.protected_from_scale_in => {
                let why = if m.protected_from_scale_in {
                    "protected from scale-in".to_string()
                } else {
                    m.lifecycle.to_string()
                };
                return self.roll_back(spot, &group, format!("{od} is now {why}")).await;
            }
            Some(_) => {}
        }
        // Desired capacity away from what the attach made it, and not by our own younger
        // attaches: someone else set it, counting the copy in. Seen at every read, so that a
        // change and its undoing in the meantime is not mistaken for no change at the end.
        let mut counted = None;
        if let Some(r) = record.filter(|r| r.desired != group.desired) {
            let pending = match self.pending_attaches(&group).await {
                Ok(pending) => pending,
                Err(e) => return self.failed("could not read the group's other copies", e),
            };
            // Recorded the same as another attach of the same second: see [`Attached::counted`].
            let r = match Attached::counted(spot, &pending, &group).filter(|c| c.desired != r.desired) {
                Some(c) => {
                    let tag = Tags::from([(TAG_ATTACHED.to_string(), c.value())]);
                    if let Err(e) = self.cloud.tag_instances(std::slice::from_ref(spot_id), &tag).await {
                        return self.failed("could not record the attach on the copy", e);
                    }
                    let mut recorded = spot.clone();
                    recorded.tags.extend(tag);
                    counted = Some(recorded);
                    c
                }
                None => r,
            };
            let younger = Attached::younger(spot, &pending, &group).len() as i32;
            if group.desired != r.desired + younger {
                let why = format!("desired capacity of {} moved since the attach (now {})", group.name, group.desired);
                return self.keep_both(counted.as_ref().unwrap_or(spot), &group, why).await;
            }
        }
        let spot = counted.as_ref().unwrap_or(spot);
        // InService is not serving: the copy must be healthy in every target group and
        // InService in every Classic Load Balancer of the group before the instance leaves. A
        // target group's `unhealthy` is not final until the deadline.
        let unhealthy = match healthy {
            true => Ok(None),
            false => self.unhealthy(&group.target_groups, &group.load_balancers, std::slice::from_ref(spot_id)).await,
        };
        match unhealthy {
            Ok(None) => {}
            Ok(Some(why)) if self.now >= healthy_by => {
                self.pause(spot, &group, Cause::Unserved).await;
                let outcome = self.roll_back(
                    spot,
                    &group,
                    format!("not healthy {} s after attach: {why}", policy.healthy_deadline),
                );
                return outcome.await;
            }
            Ok(Some(why)) => {
                let waiting = SwapRequest {
                    healthy_by: Some(healthy_by),
                    target_groups: group.target_groups.clone(),
                    load_balancers: group.load_balancers.clone(),
                    ..self.req.clone()
                };
                return self.later(&format!("waiting for the load balancers: {why}"), &waiting).await;
            }
            Err(e) => return self.failed("could not read the copy's health behind its load balancers", e),
        }
        // A copy EC2 has given an interruption notice ends within two minutes: keep the instance
        // it was to replace. The notice is read here, right before the retire, because its event
        // may reach the interruption handler after this swap.
        if self.req.market == Market::Spot {
            match self.cloud.interruption_notice(spot_id).await {
                Ok(false) => {}
                Ok(true) => {
                    return self.roll_back(spot, &group, format!("{spot_id} has a Spot interruption notice")).await
                }
                Err(e) => return self.failed("could not read the copy's Spot request", e),
            }
        }
        if let Some(outcome) = self.younger_first(spot, &group, &format!("{spot_id} serves"), true).await {
            return outcome;
        }
        // (Younger attaches are netted out: desired is what this one's made it, unless moved.)
        if !Attached::decrements(spot, group.desired) {
            let why = format!("desired capacity of {} moved since the attach (now {})", group.name, group.desired);
            return self.keep_both(spot, &group, why).await;
        }
        if group.desired - 1 < group.min {
            let why = format!("retiring {od} would take {} below MinSize {}", group.name, group.min);
            return self.keep_both(spot, &group, why).await;
        }
        match self.moved_since_attach(spot, &group).await {
            Ok(None) => {}
            Ok(Some(to)) => {
                let why = format!("desired capacity of {} went to {to} since the attach and came back", group.name);
                return self.keep_both(spot, &group, why).await;
            }
            Err(outcome) => return outcome,
        }
        // The reads above take a few calls: the group once more, right before the decrement, so
        // that a scale-in meanwhile is not taken one instance further, nor a copy the
        // interruption handler took out meanwhile (with a decrement of its own) left uncounted.
        match self.group().await {
            Ok(Some(g))
                if (g.desired, g.min) == (group.desired, group.min)
                    && g.member(od) == group.member(od)
                    && g.member(spot_id) == group.member(spot_id) => {}
            Ok(_) => {
                return self.later(&format!("{} changed while the swap read it", group.name), &self.full_read()).await
            }
            Err(outcome) => return outcome,
        }
        // Through the group, so its termination lifecycle hooks (draining) run.
        if let Err(e) = self.cloud.terminate_in_group(od, true).await {
            // No answer, or a 5xx: the retire may have been made. A fresh read that shows the
            // instance on its way out and desired one lower says it was, and the mark follows
            // now rather than at a later delivery (by then an operator may have set desired to
            // the value the open record names, and the +1 would be given back twice).
            let made = e.transient
                && matches!(self.group().await, Ok(Some(g))
                    if g.member(od).is_none_or(|m| m.lifecycle.is_leaving()) && g.desired == group.desired - 1);
            if !made {
                return self.failed("could not retire the replaced instance", e);
            }
        }
        // After, not before: were the instance then to leave by itself, a mark written first
        // would take it for retired. A crash in between leaves no mark, and the next delivery
        // finds desired one below the attach's, so nothing to give back.
        let marked = mark(self.cloud, spot, Some(Netting::Retire)).await;
        info!(asg = %group.name, od = %od, spot = %spot_id, "swapped");
        self.metrics.incr(metrics::REPLACEMENTS_COMPLETED);
        // The read above was made after any raise of this swap, so it shows the tag if one is there.
        if group.tags.contains_key(TAG_ORIGINAL_MAX) {
            self.restore_max().await;
        }
        if let Err(e) = marked {
            return self.unrecorded("retire", e);
        }
        Outcome::Done(format!("swapped {od} for {spot_id}"))
    }

    /// A scaling action or an operator set desired capacity since the attach, counting the copy
    /// in: their value stands, and so does the replaced instance (retiring it now would leave the
    /// group short of their value until a replacement serves). Or MinSize was raised under us.
    /// Either way both instances stay and this swap is over; a later one replaces the instance,
    /// without this one's +1.
    async fn keep_both(&self, spot: &Instance, group: &Group, why: String) -> Outcome {
        let (od, spot_id) = (&self.req.old, &self.req.new);
        if let Err(e) = mark(self.cloud, spot, Some(Netting::Over)).await {
            return self.failed("could not record on the copy that its swap is over", e);
        }
        info!(asg = %group.name, od = %od, spot = %spot_id, reason = %why, "both instances stay");
        if group.tags.contains_key(TAG_ORIGINAL_MAX) {
            self.restore_max().await;
        }
        Outcome::Done(format!("{why}: {spot_id} stays in, {od} stays for a later swap"))
    }

    /// The copy is not running, or was handed back by the interruption handler: never attached,
    /// it is a failed replacement; attached, the group replaces it, and the swap gives back the
    /// +1 of its attach once the group has settled.
    async fn copy_gone(&self, spot: &Instance, group: &Group) -> Outcome {
        let (od, spot_id) = (&self.req.old, &self.req.new);
        let reason = spot.state_reason.as_deref().unwrap_or("no state reason");
        let what = format!("{spot_id} is {} ({reason})", spot.state);
        let netted = spot.attached().and_then(|r| r.netting).is_some_and(|n| n != Netting::Waiting);
        match spot.attached() {
            Some(_) if Attached::pending(spot, group) => {
                self.settle(spot, group, format!("{what} after its attach")).await
            }
            Some(_) if netted => {
                Outcome::Done(format!("{what} after its swap netted out its attach; the group replaces it"))
            }
            // No record, or one of an attach that never happened (the copy died outside the group).
            _ => {
                // Never attached: e.g. a KMS key the launching role may not use kills it at launch.
                warn!(asg = %group.name, new = %spot_id, state = %spot.state, reason = %reason, "the copy died before its attach");
                self.metrics.incr(metrics::REPLACEMENTS_FAILED);
                let why = format!("{what} before its attach");
                if group.member(od).is_none() {
                    return Outcome::Dropped(format!("{why}; {od} has left {} too", group.name));
                }
                set_aside(self.cloud, self.config, od, self.now, why).await
            }
        }
    }

    /// The copy or the instance it replaces left the group by another path than this swap, so
    /// no retire will net out the attach: once younger attaches are netted out and the group has
    /// settled (as many members as desired, each InService and serving), give back the +1 the
    /// attach added, if desired is still what it made.
    async fn settle(&self, spot: &Instance, group: &Group, what: String) -> Outcome {
        let Some(record) = spot.attached() else {
            return Outcome::Done(what);
        };
        if !Attached::pending(spot, group) {
            // A later delivery of a swap that retired, rolled back or gave back already.
            return Outcome::Done(format!("{what}; the attach's +1 is netted out already ({:?})", record.netting));
        }
        if let Some(outcome) = self.younger_first(spot, group, &what, false).await {
            return outcome;
        }
        let mut moved = None;
        if group.desired == record.desired {
            moved = match self.moved_since_attach(spot, group).await {
                Ok(moved) => moved,
                Err(outcome) => return outcome,
            };
            if moved.is_none() && self.left_unserved(spot, group) {
                self.pause(spot, group, Cause::Unserved).await;
            }
        }
        if group.desired != record.desired || moved.is_some() || record.desired - 1 < group.min {
            let why = match moved {
                _ if group.desired != record.desired => "desired moved since the attach: nothing to give back".into(),
                Some(to) => format!("desired went to {to} since the attach and came back: nothing to give back"),
                None => "giving back the attach's +1 would go below MinSize".to_string(),
            };
            if let Err(e) = mark(self.cloud, spot, Some(Netting::Over)).await {
                return self.failed("could not record on the copy that its swap is over", e);
            }
            return Outcome::Done(format!("{what}; {why}"));
        }
        let settled = group.members.iter().filter(|m| !m.lifecycle.is_leaving()).count() == group.desired as usize
            && group.members.iter().all(|m| m.lifecycle == Lifecycle::InService || m.lifecycle.is_leaving());
        if !settled {
            let why = format!("{what}; giving back the attach's +1 once the group has settled");
            return self.later(&why, &self.full_read()).await;
        }
        // The group picks which member a lower desired capacity removes, whatever its load
        // balancers say: every member must serve first, or it may remove a serving one.
        let members: Vec<String> =
            group.members.iter().filter(|m| !m.lifecycle.is_leaving()).map(|m| m.id.clone()).collect();
        match self.unhealthy(&group.target_groups, &group.load_balancers, &members).await {
            Ok(None) => {}
            Ok(Some(why)) => {
                let why = format!("{what}; giving back the attach's +1 once every member serves ({why})");
                return self.later(&why, &self.full_read()).await;
            }
            Err(e) => return self.failed("could not read the group's health behind its load balancers", e),
        }
        // A copy that died is a failed replacement: its instance is set aside for a while (before
        // the give-back, while it is certainly still a member: the group may pick it to go).
        let failed = !spot.is_live() && group.member(&self.req.old).is_some_and(|m| !m.lifecycle.is_leaving());
        if failed {
            set_aside(self.cloud, self.config, &self.req.old, self.now, what.clone()).await;
        }
        if let Err(e) = self.cloud.set_desired(&group.name, record.desired - 1).await {
            return self.failed("could not give back the attach's +1", e);
        }
        // After, not before: a crash in between must not leave the +1 for good (the next
        // delivery finds desired moved since the attach, and nothing to give back).
        let marked = mark(self.cloud, spot, Some(Netting::Over)).await;
        warn!(asg = %group.name, desired = record.desired - 1, reason = %what, "gave back the desired capacity our attach added");
        self.metrics.incr(if spot.is_live() { metrics::REPLACEMENTS_COMPLETED } else { metrics::REPLACEMENTS_FAILED });
        if let Err(e) = marked {
            return self.unrecorded("give-back", e);
        }
        Outcome::Done(format!("{what}; desired back to {}", record.desired - 1))
    }

    /// Whether desired, what the attach made it now, was another value since the attach and came
    /// back (an operator or a policy within seconds: 4 -> 3 -> 4, or 4 -> 5 -> 4): then the +1 of
    /// the attach is no longer in it, and desired is someone else's value. No read of the group
    /// tells; the group's scaling activities do: a termination that shrank the group below the
    /// attach's value, or a launch that grew it above, listed after the copy's attach (one
    /// before it may have been counted in the record). Read right before each
    /// decrement that nets out an attach no swap of ours has netted out yet: the retire, a
    /// give-back, a roll-back. `Some` capacity it went to; `None` when it did not, or the
    /// activities do not say (older than the newest page, a cause worded otherwise, a read
    /// refused: as before this read, the +1 is netted out).
    async fn moved_since_attach(&self, spot: &Instance, group: &Group) -> Result<Option<i32>, Outcome> {
        let Some(record) = spot.attached().filter(|r| matches!(r.netting, None | Some(Netting::Out))) else {
            return Ok(None);
        };
        match self.cloud.scaling_activities(&group.name).await {
            Ok(activities) => Ok(Activity::moved_from(&activities, record.desired, &spot.id)),
            Err(e) if e.transient => Err(self.failed("could not read the group's scaling activities", e)),
            Err(e) => {
                warn!(asg = %group.name, error = %e, "could not read the group's scaling activities; taken as unmoved");
                Ok(None)
            }
        }
    }

    /// Whether the copy, leaving or gone after its attach, left while this swap waited for it to
    /// serve behind the load balancers because it did not: taken out by the group as unhealthy
    /// (desired still what its attach made it, and never below it since: see
    /// [`Self::moved_since_attach`]), not reclaimed by EC2. Every copy of its configuration may
    /// do the same.
    fn left_unserved(&self, spot: &Instance, group: &Group) -> bool {
        self.req.healthy_by.is_some()
            && !(spot.is_live() && group.member(&spot.id).is_some_and(|m| !m.lifecycle.is_leaving()))
            && Attached::pending(spot, group)
            && Attached::decrements(spot, group.desired)
            && spot.state_reason.as_deref() != Some(SPOT_RECLAIMED)
    }

    /// Our copies for this group whose attach is recorded and not netted out yet, leaving out
    /// records older than any deadline of their own swap (a swap lost to a crash must not hold
    /// the group back for good).
    async fn pending_attaches(&self, group: &Group) -> Result<Vec<Instance>, crate::error::AwsError> {
        Ok(self
            .copies(group)
            .await?
            .into_iter()
            .filter(|c| Attached::pending(c, group) && self.patient(c, group))
            .collect())
    }

    /// Why this copy must wait for its turn to be attached (see [`Attached::holds_turn`]): the
    /// attach of another copy of ours holds it; and, when that attach is only recorded (its
    /// swap may be attaching it, or waiting as well), its record's time and the copy's id.
    async fn turn_taken(
        &self,
        spot_id: &str,
        group: &Group,
    ) -> Result<Option<(String, Option<(Epoch, String)>)>, crate::error::AwsError> {
        let copies = self.copies(group).await?;
        let Some(c) = copies
            .iter()
            .find(|c| c.id != spot_id && Attached::holds_turn(c, group, self.now) && self.patient(c, group))
        else {
            return Ok(None);
        };
        // A copy that died (or is leaving) after its attach leaves the group one above its
        // desired capacity until its swap gives the +1 back, once the group has settled.
        let why = match group.member(&c.id) {
            _ if !c.is_live() => {
                format!("{} died after its attach to {} and its +1 is not given back yet", c.id, group.name)
            }
            Some(m) if m.lifecycle.is_leaving() => {
                format!("{} left {} after its attach and its +1 is not given back yet", c.id, group.name)
            }
            Some(_) => format!("{} is attached to {} and its swap is not over: one attach at a time", c.id, group.name),
            None => format!("{} is being attached to {}: one attach at a time", c.id, group.name),
        };
        let recorded = c.attached().filter(|_| c.is_live() && group.member(&c.id).is_none());
        Ok(Some((why, recorded.map(|r| (r.at, c.id.clone())))))
    }

    /// Our copies launched for this group, in any state.
    async fn copies(&self, group: &Group) -> Result<Vec<Instance>, crate::error::AwsError> {
        let query = InstanceQuery::Tagged { key: TAG_GROUP.into(), value: Some(group.name.clone()) };
        self.cloud.instances(&query, ANY_STATE).await
    }

    /// Whether `copy`'s record is young enough to count: one older than any deadline of its own
    /// swap is left out.
    fn patient(&self, copy: &Instance, group: &Group) -> bool {
        copy.attached().is_some_and(|r| r.at > self.since(group))
    }

    /// Records made before this count for nothing in `group` (see [`Attached::patience`]).
    fn since(&self, group: &Group) -> Epoch {
        let healthy_deadline = GroupState::read(&group.tags, &self.config.policy).policy.healthy_deadline;
        self.now - Attached::patience(healthy_deadline, self.config.orphan_deadline)
    }

    /// Attaches of ours are netted out youngest first (see [`Attached::younger`]): `Some` (wait)
    /// while a younger one in the group is not. The same read shows the copy itself, fresh: when
    /// it is to replace an instance (`retiring`), it must still be running, and a copy the
    /// interruption handler marked for a rebalance recommendation is rolled back instead.
    async fn younger_first(&self, spot: &Instance, group: &Group, what: &str, retiring: bool) -> Option<Outcome> {
        spot.attached()?;
        let pending = match self.pending_attaches(group).await {
            Ok(p) => p,
            Err(e) => return Some(self.failed("could not read the group's other copies", e)),
        };
        if let Some(me) = pending.iter().find(|c| c.id == spot.id).filter(|_| retiring) {
            if !me.is_live() {
                let why = format!("{} is {} now", me.id, me.state);
                return Some(self.later(&why, &self.full_read()).await);
            }
            // The interruption handler marks the copy and leaves the roll-back to this swap.
            if let Some(at) = me.tag(TAG_REBALANCE) {
                let why = format!("{} got a rebalance recommendation at {at}", me.id);
                return Some(Box::pin(self.roll_back(spot, group, why)).await);
            }
        }
        let younger = *Attached::younger(spot, &pending, group).first()?;
        let why = format!("{what}; waiting for {}, attached later, to net out its attach first", younger.id);
        Some(self.later(&why, &self.full_read()).await)
    }

    /// Put MaxSize back once no other swap of this group needs the room; otherwise the last one
    /// (or the scanner) does.
    async fn restore_max(&self) {
        // The copies first, the group last: the give-back is made from the freshest read of it.
        let copies = match self
            .cloud
            .instances(&InstanceQuery::Tagged { key: TAG_GROUP.into(), value: Some(self.req.group.clone()) }, LIVE)
            .await
        {
            Ok(s) => s,
            Err(e) => return warn!(error = %e, "could not check other swaps; the scanner will restore MaxSize"),
        };
        let group = match self.group().await {
            Ok(Some(g)) if g.tags.contains_key(TAG_ORIGINAL_MAX) => g,
            _ => return,
        };
        if busy(&group, &copies, self.since(&group)) {
            return info!(asg = %group.name, "other swaps under way; MaxSize restored later");
        }
        if gone_dry(&group, self.config) {
            return info!(asg = %group.name, "in dry-run: MaxSize left as it is until the group leaves dry-run");
        }
        if let Err(e) = put_max_back(self.cloud, &group, &GroupState::read(&group.tags, &self.config.policy)).await {
            warn!(error = %e, "could not restore MaxSize; the scanner will");
        }
    }

    /// This swap, to read everything again next time (no wait on one thing alone).
    fn full_read(&self) -> SwapRequest {
        SwapRequest {
            launched: None,
            healthy_by: None,
            target_groups: Vec::new(),
            load_balancers: Vec::new(),
            ..self.req.clone()
        }
    }

    /// This swap, to check again on the copy's status checks only (see [`Self::run`]).
    fn waiting_for_checks(&self, spot: &Instance) -> SwapRequest {
        SwapRequest { launched: Some(self.req.launched.unwrap_or(spot.launch_time)), ..self.req.clone() }
    }

    /// A swap past its attach in a group gone to dry-run changes nothing, but is not dropped:
    /// its +1 is in the group's desired capacity, and should the copy die meanwhile, no scan
    /// sees it any more (the scanner resumes only swaps whose copy is a member). It comes back
    /// every [`DRY_RUN_WAIT`] seconds until the group leaves dry-run.
    async fn wait_out_dry_run(&self, group: &str, would: &str) -> Outcome {
        info!(asg = %group, dry_run = true, "would {would}");
        let why = format!("group {group} is in dry-run: would {would}; nothing changed until it leaves dry-run");
        self.later_in(&why, &self.full_read(), DRY_RUN_WAIT).await
    }

    async fn later(&self, why: &str, next: &SwapRequest) -> Outcome {
        self.later_in(why, next, self.config.ready_delay).await
    }

    async fn later_in(&self, why: &str, next: &SwapRequest, delay: i32) -> Outcome {
        match send_swaps(self.cloud, self.config, std::slice::from_ref(next), delay).await {
            Ok(0) => Outcome::Done(format!("waiting: {why}; checking again in {delay} s")),
            Ok(_) => Outcome::Retry(format!("waiting: {why}; could not re-enqueue")),
            Err(e) => self.failed("could not re-enqueue the swap", e),
        }
    }

    /// The copy failed in a way every copy of its configuration would: pause the launches from
    /// that configuration for the whole group (see [`crate::domain::drift`]), not just for this
    /// instance. Only if the copy runs the group's current configuration; for failed status
    /// checks, only while that configuration is being rolled out (the instance it replaces runs
    /// an older one), since an instance the group launched would fail them too.
    async fn pause(&self, spot: &Instance, group: &Group, cause: Cause) {
        let state = GroupState::read(&group.tags, &self.config.policy);
        if cause == Cause::Checks && !state.policy.rollout {
            return;
        }
        let current = match current_template(self.cloud, group).await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => return warn!(error = %e, "could not read the launch template; launches not paused"),
        };
        if drift(spot, &current).is_some() || state.paused_since(&current).is_some() {
            // Launched from a configuration the group has left already, or paused already.
            return;
        }
        if cause == Cause::Checks {
            let old = match self.cloud.instances(&InstanceQuery::Ids(vec![self.req.old.clone()]), ANY_STATE).await {
                Ok(found) => found.into_iter().next(),
                Err(e) => return warn!(error = %e, "could not read the replaced instance; rollout not paused"),
            };
            if old.is_none_or(|o| drift(&o, &current).is_none()) {
                return;
            }
        }
        let tags = Tags::from([(TAG_ROLLOUT_PAUSED.to_string(), pause_value(&current, self.now, cause))]);
        let why = match cause {
            Cause::Checks => "a new instance failed its status checks",
            Cause::Unserved => "an attached copy never served behind the group's load balancers",
        };
        match self.cloud.tag_group(&group.name, &tags).await {
            Ok(()) => {
                self.metrics.incr(metrics::ROLLOUTS_PAUSED);
                warn!(asg = %group.name, configuration = %fingerprint(&current), spot = %spot.id, "launches paused: {why}");
            }
            Err(e) => warn!(asg = %group.name, error = %e, "could not pause the launches"),
        }
    }

    /// Not attached and not going to be: terminate our copy, keep the replaced instance.
    async fn abandon(&self, spot: &Instance, why: String) -> Outcome {
        // A record of an attach that did not happen must not hold back the other swaps.
        if let Err(e) = mark(self.cloud, spot, Some(Netting::Over)).await {
            return self.failed("could not record on the copy that it is not attached", e);
        }
        if let Err(e) = self.cloud.terminate(std::slice::from_ref(&spot.id)).await {
            return self.failed("could not terminate the abandoned Spot instance", e);
        }
        warn!(spot = %spot.id, reason = %why, "abandoned swap; copy terminated");
        self.metrics.incr(metrics::REPLACEMENTS_FAILED);
        self.restore_max().await;
        set_aside(self.cloud, self.config, &self.req.old, self.now, format!("{why}; terminated {}", spot.id)).await
    }

    /// Attached but the replaced instance must stay: take the copy back out through the group,
    /// decrementing desired (so the group ends as it began), and set the instance aside for a
    /// while.
    async fn roll_back(&self, spot: &Instance, group: &Group, why: String) -> Outcome {
        let spot_id = &self.req.new;
        if let Some(outcome) = self.younger_first(spot, group, &why, false).await {
            return outcome;
        }
        // Desired moved since the attach (or away and back): the copy is counted in someone
        // else's value. If it serves, it stays (taking it out would leave the group short of
        // their value until a replacement serves); if not, it goes without a decrement, and the
        // group launches one that does.
        let mut decrement = Attached::decrements(spot, group.desired);
        if decrement {
            match self.moved_since_attach(spot, group).await {
                Ok(moved) => decrement = moved.is_none(),
                Err(outcome) => return outcome,
            }
        }
        if !decrement {
            let copy = std::slice::from_ref(spot_id);
            match self.unhealthy(&group.target_groups, &group.load_balancers, copy).await {
                Ok(None) if group.member(spot_id).is_some_and(|m| m.lifecycle == Lifecycle::InService) => {
                    let why = format!("{why}, but desired capacity of {} moved since the attach", group.name);
                    return self.keep_both(spot, group, why).await;
                }
                Ok(_) => {}
                Err(e) => return self.failed("could not read the copy's health behind its load balancers", e),
            }
        }
        if decrement && group.desired - 1 < group.min {
            return self
                .keep_both(spot, group, format!("{why}, but rolling back {spot_id} would go below MinSize"))
                .await;
        }
        if let Err(e) = self.cloud.terminate_in_group(spot_id, decrement).await {
            return self.failed("could not roll back the copy", e);
        }
        // After, as for a retire.
        let marked = mark(self.cloud, spot, Some(Netting::RollBack)).await;
        warn!(spot = %spot_id, reason = %why, decrement, "rolled back: copy terminated through the group");
        self.metrics.incr(metrics::REPLACEMENTS_FAILED);
        self.restore_max().await;
        let outcome =
            set_aside(self.cloud, self.config, &self.req.old, self.now, format!("{why}; rolled back {spot_id}")).await;
        if let Err(e) = marked {
            return self.unrecorded("roll-back", e);
        }
        outcome
    }

    /// A retire, give-back or roll-back made, its mark on the copy not written: the swap comes
    /// back to write it. Left open, the record would keep the group busy for good (a dead copy
    /// whose replaced instance stays), its MaxSize raised and its marker on. The next delivery
    /// finds desired one below the attach's (or the activity that made it so) and marks the
    /// swap over, giving nothing back twice.
    fn unrecorded(&self, what: &str, e: crate::error::AwsError) -> Outcome {
        warn!(error = %e, "could not record the {what} on the copy; the next delivery does");
        self.failed(&format!("{what} made, its record on the copy not written"), e)
    }
}
