//! The scanner's run: read everything in a fixed number of paginated calls, read each group's
//! tags once, plan with [`plan_groups`] and [`housekeeping`], then act, re-checking right
//! before each change.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{error, info, warn};

use crate::actions::{compatible_with, gone_dry, mark_record, put_max_back, send_swaps};
use crate::cloud::{Cloud, GroupQuery, InstanceQuery, Outgoing, ANY_STATE, LIVE};
use crate::config::Config;
use crate::domain::housekeeping::{busy, housekeeping, stale_tags, MaxRepair, Orphan, Stalled};
use crate::domain::model::{
    Attached, Epoch, Group, Hold, Hook, Instance, LaunchSource, Market, Netting, TemplateVersion, TAG_HOLD,
    TAG_ORIGINAL_MAX, TAG_REPLACES, TAG_SWAP_UNDER_WAY,
};
use crate::domain::plan::{managed_spots, plan_groups, GroupPlan, ScanInput};
use crate::domain::policy::Mode;
use crate::domain::pools::ALL_POOLS;
use crate::domain::reserved;
use crate::domain::savings::{self, Savings};
use crate::domain::state::GroupState;
use crate::error::AwsError;
use crate::message::{to_body, SpotRequest, SwapRequest};

/// What one scan saw and did. The scanner logs it as one line and returns it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScanSummary {
    pub groups: usize,
    /// On-Demand instances to replace by Spot now.
    pub candidates: usize,
    /// Spot instances to replace by On-Demand now (groups below their On-Demand floor).
    pub to_on_demand: usize,
    /// Replacements enqueued (both directions; none for dry-run groups).
    pub enqueued: usize,
    /// Groups in dry-run: what they would have enqueued is logged and listed per group.
    pub dry_run_groups: usize,
    /// Spot pools backed off now, over all groups.
    pub pools_backed_off: usize,
    /// On-Demand instances left alone because every compatible Spot pool is backed off.
    pub held_back: usize,
    /// Instances running another launch template, version or AMI than their group's current
    /// one; replacements of such instances enqueued now (in either market) and under way; groups
    /// whose rollout is paused.
    pub outdated: usize,
    pub rollout: usize,
    pub rollout_in_flight: usize,
    pub rollouts_paused: usize,
    /// Reserved-Instance coverage (absent when turned off or when there is no reservation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<ReservedSummary>,
    pub in_flight: usize,
    pub cleaned_up: usize,
    pub resumed: usize,
    pub repaired: usize,
    /// Our Spot instances serving in opted-in groups, and what they save per hour (absent when
    /// prices could not be had).
    pub spot_managed: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savings: Option<Savings>,
    pub per_group: Vec<GroupPlan>,
    /// AWS calls this scan made, per `service:Operation` (filled by the handler).
    #[serde(default)]
    pub api_calls: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// How the account's reservations fall on the opted-in groups' On-Demand instances.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReservedSummary {
    /// On-Demand instances of opted-in groups that reservations fully pay for (kept On-Demand),
    /// and those they do not.
    pub covered: usize,
    pub uncovered: usize,
    /// Reservations no running instance uses, e.g. "2 x c5.large in eu-west-1a (zonal)".
    pub unused: Vec<String>,
    pub unused_units: f64,
}

/// Which groups a [`survey`] reads and plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The groups carrying the opt-in tag: the scanner's.
    OptedIn,
    /// These groups, opted in or not, planned as if they were (the command line's `--group`).
    Named(Vec<String>),
    /// Every group of the account, planned as if opted in (the command line's `--all-groups`).
    All,
}

/// What a scan reads and decides before it acts: the scanner acts on it, the command line's
/// `plan` and `status` only show it.
#[derive(Debug, Clone)]
pub struct Survey {
    pub input: ScanInput,
    pub groups: Vec<GroupPlan>,
    pub coverage: Option<reserved::Coverage>,
    pub notes: Vec<String>,
}

/// The scanner's reads, in a fixed number of paginated calls (plus one lifecycle-hook read per
/// group with work to start), and its pure planning. Makes no change.
pub async fn survey<C: Cloud>(cloud: &C, config: &Config, now: Epoch, scope: &Scope) -> Result<Survey, AwsError> {
    let leftover_keys = [TAG_SWAP_UNDER_WAY, TAG_ORIGINAL_MAX];
    let (planned, raised) = match scope {
        Scope::OptedIn => (
            cloud
                .groups(&GroupQuery::Tagged { key: config.opt_in_key.clone(), value: config.opt_in_value.clone() })
                .await?,
            cloud.groups(&GroupQuery::HavingAnyTag { keys: leftover_keys.map(String::from).to_vec() }).await?,
        ),
        Scope::Named(_) | Scope::All => {
            let query = match scope {
                Scope::Named(names) => GroupQuery::Named(names.clone()),
                _ => GroupQuery::All,
            };
            let groups = cloud.groups(&query).await?;
            let raised: Vec<Group> =
                groups.iter().filter(|g| leftover_keys.iter().any(|k| g.tags.contains_key(*k))).cloned().collect();
            (groups, raised)
        }
    };
    let names: Vec<String> = planned.iter().map(|g| g.name.clone()).collect();
    let instances =
        if names.is_empty() { Vec::new() } else { cloud.instances(&InstanceQuery::InGroups(names), LIVE).await? };
    let spots = cloud.instances(&InstanceQuery::Tagged { key: TAG_REPLACES.into(), value: None }, ANY_STATE).await?;

    let states = GroupState::read_all(planned.iter().chain(&raised), &config.policy);

    let mut notes = Vec::new();
    let compatible = compatible_types(cloud, config, &planned, &states, &instances, now, &mut notes).await;
    let current = current_templates(cloud, &planned, &mut notes).await;
    let coverage = reserved_coverage(cloud, config, &planned, &states, &instances, &mut notes).await;
    let mut input = ScanInput {
        reserved: coverage.as_ref().map(|c| c.covered.clone()).unwrap_or_default(),
        opted_in: planned,
        raised,
        states,
        instances,
        spots,
        compatible,
        current,
        now,
        defaults: config.policy.clone(),
        orphan_deadline: config.orphan_deadline,
        launch_hooked: BTreeSet::new(),
    };
    let mut groups = plan_groups(&input);
    // A group with a launch hook gets no copy (an attached instance skips it): its hooks are
    // read only when it has work to start, and then it is planned again knowing them.
    let to_look: Vec<&str> = groups
        .iter()
        .filter(|g| g.mode == Mode::Enabled && has_work(g))
        .filter(|g| !input.state(&g.name).policy.ignore_launch_hooks)
        .map(|g| g.name.as_str())
        .collect();
    for group in to_look {
        match cloud.lifecycle_hooks(group).await {
            Ok(hooks) if hooks.contains(&Hook::Launching) => {
                input.launch_hooked.insert(group.to_string());
            }
            Ok(_) => {}
            Err(e) => {
                // Without the answer, the group waits for the next scan rather than risk it.
                warn!(asg = %group, code = e.code(), error = %e, "could not read lifecycle hooks; no replacement this scan");
                notes.push(format!("group {group}: no replacement this scan: could not read its lifecycle hooks: {e}"));
                input.launch_hooked.insert(group.to_string());
            }
        }
    }
    if !input.launch_hooked.is_empty() {
        groups = plan_groups(&input);
    }
    Ok(Survey { input, groups, coverage, notes })
}

/// Whether the plan starts any replacement in the group.
fn has_work(g: &GroupPlan) -> bool {
    !(g.candidates.is_empty() && g.to_on_demand.is_empty() && g.rollout.is_empty())
}

/// One scan. Fails only when it cannot read the account; a failed action is logged, listed in
/// `errors`, and retried by the next scan.
pub async fn scan<C: Cloud>(cloud: &C, config: &Config, now: Epoch) -> Result<ScanSummary, AwsError> {
    let Survey { input, groups, coverage, mut notes } = survey(cloud, config, now, &Scope::OptedIn).await?;
    let chores = housekeeping(&input);
    let managed = managed_spots(&input);

    notes.extend(chores.notes.iter().cloned());
    let mut summary = ScanSummary {
        groups: groups.len(),
        candidates: groups.iter().map(|g| g.candidates.len()).sum(),
        to_on_demand: groups.iter().map(|g| g.to_on_demand.len()).sum(),
        dry_run_groups: groups.iter().filter(|g| g.mode == Mode::DryRun).count(),
        pools_backed_off: groups.iter().map(|g| g.backed_off_pools).sum(),
        held_back: groups.iter().map(|g| g.held_back).sum(),
        outdated: groups.iter().map(|g| g.outdated).sum(),
        rollout: groups.iter().map(|g| g.rollout.len()).sum(),
        rollout_in_flight: groups.iter().map(|g| g.rollout_in_flight).sum(),
        rollouts_paused: groups.iter().filter(|g| g.rollout_paused.is_some()).count(),
        reserved: coverage.map(|c| ReservedSummary {
            covered: c.covered.len(),
            uncovered: c.uncovered,
            unused: c.unused,
            unused_units: c.unused_units,
        }),
        in_flight: groups.iter().map(|g| g.in_flight).sum(),
        notes,
        ..Default::default()
    };
    for g in &groups {
        summary.notes.extend(g.notes.iter().map(|n| format!("group {}: {n}", g.name)));
        if let Some(why) = &g.rollout_paused {
            warn!(asg = %g.name, reason = %why, "rollout paused");
        }
    }

    summary.spot_managed = managed.len();
    summary.savings = estimate_savings(cloud, config, &managed, &mut summary.notes).await;

    enqueue(cloud, config, now, &groups, &mut summary).await;
    clean_up(cloud, &chores.orphans, &mut summary).await;
    resume(cloud, config, &chores.stalled, &mut summary).await;
    repair(cloud, config, &chores.repairs, &mut summary).await;
    // A group that gets replacements this scan keeps its swap marker: its next swap would only
    // write it again.
    let replacing: BTreeSet<&str> =
        groups.iter().filter(|g| g.mode == Mode::Enabled && has_work(g)).map(|g| g.name.as_str()).collect();
    let stale: Vec<(String, Vec<String>)> = chores
        .stale_tags
        .iter()
        .map(|(g, keys)| {
            let keep_marker = replacing.contains(g.as_str());
            (g.clone(), keys.iter().filter(|k| !(keep_marker && *k == TAG_SWAP_UNDER_WAY)).cloned().collect())
        })
        .filter(|(_, keys): &(String, Vec<String>)| !keys.is_empty())
        .collect();
    remove_stale_tags(cloud, config, now, &input.current, &stale, &mut summary).await;

    summary.per_group = groups;
    Ok(summary)
}

/// Delete tags of ours that no longer mean anything ([`stale_tags`]), re-reading the groups
/// right before: the spot-creator, the swapper or the interruption handler may have backed off a
/// pool, paused a rollout or started a swap since the scan read them. A swap marker is removed
/// only after a fresh read of our copies too shows that no swap of the group is under way.
async fn remove_stale_tags<C: Cloud>(
    cloud: &C,
    config: &Config,
    now: Epoch,
    current: &BTreeMap<String, TemplateVersion>,
    stale: &[(String, Vec<String>)],
    summary: &mut ScanSummary,
) {
    if stale.is_empty() {
        return;
    }
    let fresh = match cloud.groups(&GroupQuery::Named(stale.iter().map(|(g, _)| g.clone()).collect())).await {
        Ok(groups) => groups,
        Err(e) => return failed(summary, "could not re-read groups to remove stale tags", &e),
    };
    let copies = if stale.iter().any(|(_, keys)| keys.iter().any(|k| k == TAG_SWAP_UNDER_WAY)) {
        match cloud.instances(&InstanceQuery::Tagged { key: TAG_REPLACES.into(), value: None }, ANY_STATE).await {
            Ok(found) => Some(found),
            Err(e) => return failed(summary, "could not re-read our copies to remove stale tags", &e),
        }
    } else {
        None
    };
    for g in fresh.iter().filter(|g| !gone_dry(g, config)) {
        let state = GroupState::read(&g.tags, &config.policy);
        let opted_in = g.opted_in(&config.opt_in_key, &config.opt_in_value);
        // Without a fresh read of the copies, the marker counts as in use.
        let since = now - Attached::patience(state.policy.healthy_deadline, config.orphan_deadline);
        let busy = copies.as_deref().is_none_or(|c| busy(g, c, since));
        let wanted =
            stale.iter().find(|(name, _)| *name == g.name).map(|(_, keys)| keys.as_slice()).unwrap_or_default();
        let keys: Vec<String> = stale_tags(&state, opted_in, current.get(&g.name), busy, now)
            .into_iter()
            .filter(|k| wanted.contains(k))
            .collect();
        if keys.is_empty() {
            continue;
        }
        if let Err(e) = cloud.untag_group(&g.name, &keys).await {
            failed(summary, &format!("could not remove stale tags of {}", g.name), &e);
        }
    }
}

/// What each opted-in group launches now (also where rollout is disabled: its outdated instances
/// are still counted): one paginated call for every template of the account when more than one
/// is named by `$Latest` / `$Default`, otherwise one call per template. A failed lookup costs
/// this scan's rollout, and holds groups with a pause tag.
async fn current_templates<C: Cloud>(
    cloud: &C,
    groups: &[Group],
    notes: &mut Vec<String>,
) -> BTreeMap<String, TemplateVersion> {
    let named: Vec<(&str, (String, String))> = groups
        .iter()
        .filter_map(|g| match &g.launch {
            LaunchSource::Template { id, version } => Some((g.name.as_str(), (id.clone(), version.clone()))),
            _ => None,
        })
        .collect();
    if named.is_empty() {
        return BTreeMap::new();
    }
    let wanted: Vec<(String, String)> =
        named.iter().map(|(_, k)| k.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let found = match cloud.template_versions(&wanted).await {
        Ok(found) => found,
        Err(e) => {
            warn!(code = e.code(), error = %e, "could not read launch templates; no rollout this scan");
            notes.push(format!("no rollout this scan: could not read launch templates: {e}"));
            return BTreeMap::new();
        }
    };
    named
        .into_iter()
        .filter_map(|(group, key)| match found.get(&key) {
            Some(v) => Some((group.to_string(), v.clone())),
            None => {
                notes.push(format!("group {group}: launch template {} version {} not found", key.0, key.1));
                None
            }
        })
        .collect()
}

/// Which On-Demand instances of the opted-in groups active reservations (and declared ones)
/// fully pay for, after the account's other On-Demand instances have used them. One
/// DescribeReservedInstances; when there is any reservation, DescribeInstances of every type
/// that can use one. A failed lookup means no instance is kept for a reservation this scan.
async fn reserved_coverage<C: Cloud>(
    cloud: &C,
    config: &Config,
    groups: &[Group],
    states: &BTreeMap<String, GroupState>,
    instances: &[Instance],
    notes: &mut Vec<String>,
) -> Option<reserved::Coverage> {
    if !config.reserved_instances || groups.is_empty() {
        return None;
    }
    let mut reservations = match cloud.reserved_instances().await {
        Ok(r) => r,
        Err(e) => {
            warn!(code = e.code(), error = %e, "could not read Reserved Instances; none applied this scan");
            notes.push(format!("Reserved Instances not applied this scan: {e}"));
            Vec::new()
        }
    };
    reservations.extend(config.declared_reservations.iter().cloned());
    if reservations.is_empty() {
        return None;
    }
    let types: Vec<String> =
        reservations.iter().flat_map(reserved::usable_by).collect::<BTreeSet<_>>().into_iter().collect();
    let everyone = match cloud.instances(&InstanceQuery::Types(types), LIVE).await {
        Ok(found) => found,
        Err(e) => {
            warn!(code = e.code(), error = %e, "could not read the account's instances; no reservation applied");
            notes.push(format!("Reserved Instances not applied this scan: {e}"));
            return None;
        }
    };
    let (outside, inside) = reserved::split(groups, states, instances, &everyone);
    Some(reserved::coverage(&reservations, &outside, &inside))
}

/// Compatible Spot types of the On-Demand instance types in groups that have per-type pool
/// backoffs, so the plan can tell whether every pool of an instance is backed off. Costs no call
/// when no group has one (the usual case), and two cached DescribeInstanceTypes per type when
/// some do. A failed lookup only means those instances are not held back by the scanner: the
/// spot-creator still skips backed-off pools.
async fn compatible_types<C: Cloud>(
    cloud: &C,
    config: &Config,
    groups: &[Group],
    states: &BTreeMap<String, GroupState>,
    instances: &[Instance],
    now: Epoch,
    notes: &mut Vec<String>,
) -> BTreeMap<String, Vec<String>> {
    let mut types = BTreeSet::new();
    for g in groups {
        let Some(state) = states.get(&g.name) else { continue };
        if state.backoffs.0.iter().any(|((_, t), &until)| t != ALL_POOLS && until > now) {
            types.extend(
                instances.iter().filter(|i| !i.spot && g.member(&i.id).is_some()).map(|i| i.instance_type.clone()),
            );
        }
    }
    let mut out = BTreeMap::new();
    for t in types {
        match compatible_with(cloud, &t, config.max_size_factor).await {
            Ok(Some(compatible)) => {
                out.insert(t, compatible);
            }
            Ok(None) => notes.push(format!("instance type {t} is unknown to DescribeInstanceTypes")),
            Err(e) => {
                warn!(code = e.code(), error = %e, "could not describe instance types");
                notes.push(format!("could not describe instance types: {e}"));
            }
        }
    }
    out
}

/// Prices are looked up once per scan, for the distinct types only (On-Demand prices are also
/// cached by the adapter); a fixed table in the configuration replaces both lookups. A failed
/// lookup costs the estimate, never the scan.
async fn estimate_savings<C: Cloud>(
    cloud: &C,
    config: &Config,
    managed: &[(String, String)],
    notes: &mut Vec<String>,
) -> Option<Savings> {
    if managed.is_empty() {
        return Some(Savings::default());
    }
    let (on_demand, spot) = if config.price_table.is_empty() {
        let types: Vec<String> = managed.iter().map(|(t, _)| t.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let spot = cloud.spot_prices(&types).await;
        let on_demand = cloud.on_demand_prices(&types).await;
        match (on_demand, spot) {
            (Ok(od), Ok(sp)) => (od, sp),
            (Err(e), _) | (_, Err(e)) => {
                warn!(code = e.code(), error = %e, "prices unavailable; no savings estimate this scan");
                notes.push(format!("no savings estimate: {e}"));
                return None;
            }
        }
    } else {
        savings::from_table(&config.price_table, managed)
    };
    let s = savings::hourly_savings(managed, &on_demand, &spot);
    if s.unpriced > 0 {
        notes.push(format!(
            "{} Spot instances have no known price and are left out of the savings estimate",
            s.unpriced
        ));
    }
    Some(s)
}

fn failed(summary: &mut ScanSummary, what: &str, e: &AwsError) {
    error!(code = e.code(), error = %e, "{what}");
    summary.errors.push(format!("{what}: {e}"));
}

/// Claim the candidates with a tag first, so an overlapping or later scan counts them as in
/// flight, then enqueue them; the FIFO queue deduplicates by instance id what two scans that
/// overlap exactly might both send. Dry-run groups only log what they would enqueue.
async fn enqueue<C: Cloud>(cloud: &C, config: &Config, now: Epoch, groups: &[GroupPlan], summary: &mut ScanSummary) {
    let claim = now + config.claim_ttl;
    // (group, instance, market of its copy, whether that is the instance's own market)
    let mut picks: Vec<(&str, &str, Market, bool)> = Vec::new();
    for g in groups {
        let moves = g
            .candidates
            .iter()
            .map(|id| (id, Market::Spot, false))
            .chain(g.to_on_demand.iter().map(|id| (id, Market::OnDemand, false)))
            .chain(g.rollout.iter().map(|(id, market)| (id, *market, true)));
        for (id, market, same_market) in moves {
            if g.mode == Mode::DryRun {
                info!(asg = %g.name, old = %id, dry_run = true, "would replace with {}", market.as_str());
            } else {
                picks.push((g.name.as_str(), id.as_str(), market, same_market));
            }
        }
    }
    if picks.is_empty() {
        return;
    }
    // One CreateTags per kind of claim (at most two): a rollout in the instance's own market
    // says so, for the floor of the scans that see it before its copy exists.
    let mut claims: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, id, _, same_market) in &picks {
        let hold = Hold::Claim { until: claim, same_market: *same_market };
        claims.entry(hold.value()).or_default().push(id.to_string());
    }
    let mut unclaimed: BTreeSet<String> = BTreeSet::new();
    for (value, ids) in claims {
        let tags = BTreeMap::from([(TAG_HOLD.to_string(), value)]);
        match cloud.tag_instances(&ids, &tags).await {
            Ok(()) => {}
            Err(e) if e.transient => return failed(summary, "could not claim candidates; none enqueued", &e),
            // One instance that cannot take the tag (50 tags already, gone since) fails the
            // whole call: claim them one by one, and leave out only those that refuse.
            Err(_) => {
                for id in ids {
                    if let Err(e) = cloud.tag_instances(std::slice::from_ref(&id), &tags).await {
                        warn!(old = %id, code = e.code(), error = %e, "could not claim the instance; not replaced this scan");
                        summary.notes.push(format!("{id} not replaced this scan: it cannot be claimed: {e}"));
                        unclaimed.insert(id);
                    }
                }
            }
        }
    }
    picks.retain(|(_, id, _, _)| !unclaimed.contains(*id));
    if picks.is_empty() {
        return;
    }
    let messages = picks
        .iter()
        .map(|(group, id, market, _)| Outgoing {
            body: to_body(&SpotRequest::new(group, id, *market, claim)),
            delay_seconds: 0,
            group_id: Some(id.to_string()),
            dedup_id: Some(id.to_string()),
        })
        .collect();
    match cloud.send(&config.spot_queue_url, messages).await {
        Ok(unsent) => {
            summary.enqueued = picks.len() - unsent;
            if unsent > 0 {
                summary.errors.push(format!(
                    "{unsent} candidates could not be enqueued; their claims expire in {} s",
                    config.claim_ttl
                ));
            }
            for (group, id, market, _) in &picks {
                info!(asg = %group, old = %id, "enqueued for replacement with {}", market.as_str());
            }
        }
        Err(e) => failed(summary, "could not enqueue candidates; their claims will expire", &e),
    }
}

/// Terminate orphaned Spot instances of ours, after a fresh check that none of them has been
/// attached to a group since we read, and after marking over an attach recorded on one but never
/// made (an orphan whose mark fails stays for the next scan).
async fn clean_up<C: Cloud>(cloud: &C, orphans: &[Orphan], summary: &mut ScanSummary) {
    if orphans.is_empty() {
        return;
    }
    let ids: Vec<String> = orphans.iter().map(|o| o.spot.clone()).collect();
    let attached = match cloud.group_of(&ids).await {
        Ok(a) => a,
        Err(e) => return failed(summary, "could not re-check orphans; none terminated", &e),
    };
    let mut doomed = Vec::new();
    for o in orphans {
        if let Some(group) = attached.get(&o.spot) {
            warn!(spot = %o.spot, asg = %group, "orphan candidate is now in a group; left alone");
            continue;
        }
        if let Some(record) = o.unmade_attach {
            if let Err(e) = mark_record(cloud, &o.spot, record, Some(Netting::Over)).await {
                failed(
                    summary,
                    &format!(
                        "could not mark the attach recorded on orphan {} as never made; left for the next scan",
                        o.spot
                    ),
                    &e,
                );
                continue;
            }
        }
        info!(spot = %o.spot, asg = %o.group, reason = %o.reason, "terminating orphaned Spot instance");
        doomed.push(o.spot.clone());
    }
    if doomed.is_empty() {
        return;
    }
    match cloud.terminate(&doomed).await {
        Ok(()) => summary.cleaned_up = doomed.len(),
        Err(e) => failed(summary, "could not terminate orphans", &e),
    }
}

/// Swaps whose Spot instance was attached but whose On-Demand instance was never retired (the
/// swapper's message was lost): hand them back to the swapper, which resumes where it stopped.
async fn resume<C: Cloud>(cloud: &C, config: &Config, stalled: &[Stalled], summary: &mut ScanSummary) {
    if stalled.is_empty() {
        return;
    }
    let swaps: Vec<SwapRequest> = stalled
        .iter()
        .map(|s| {
            warn!(asg = %s.group, old = %s.old, new = %s.new, "swap stalled after attach; resuming");
            SwapRequest::new(&s.group, &s.old, &s.new, s.market)
        })
        .collect();
    match send_swaps(cloud, config, &swaps, 0).await {
        Ok(unsent) => summary.resumed = stalled.len() - unsent,
        Err(e) => failed(summary, "could not resume stalled swaps", &e),
    }
}

/// Put back MaxSize values a crashed swap left raised, re-reading each group right before.
async fn repair<C: Cloud>(cloud: &C, config: &Config, repairs: &[MaxRepair], summary: &mut ScanSummary) {
    if repairs.is_empty() {
        return;
    }
    let names = repairs.iter().map(|r| r.group.clone()).collect();
    let fresh = match cloud.groups(&GroupQuery::Named(names)).await {
        Ok(groups) => groups,
        Err(e) => return failed(summary, "could not re-read groups to repair", &e),
    };
    for g in fresh.iter().filter(|g| !gone_dry(g, config)) {
        match put_max_back(cloud, g, &GroupState::read(&g.tags, &config.policy)).await {
            Ok(Some(_)) => summary.repaired += 1,
            Ok(None) => {}
            Err(e) => failed(summary, &format!("could not restore the MaxSize of {}", g.name), &e),
        }
    }
}
