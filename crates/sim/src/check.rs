//! The invariants, checked before every mutating call (does the tool own what it changes?), after
//! every call and every moment of the world's own life (capacity), and once the account has come
//! to rest (nothing leaked, every group as its operator left it, the policy's mix reached).

use std::collections::{BTreeMap, BTreeSet};

use asg_core::config::Config;
use asg_core::domain::drift::drift;
use asg_core::domain::model::{
    Epoch, Group, Hold, Hook, Instance, InstanceState, Launch, Lifecycle, Tags, OUR_TAG_PREFIX, TAG_ORIGINAL_MAX,
    TAG_REPLACES,
};
use asg_core::domain::policy::Mode;
use asg_core::domain::state::GroupState;

use crate::world::World;

/// The longest the simulated account takes to answer one call: what a call acts on may have
/// changed by that much since the tool read it.
const CALL_GAP: Epoch = 5;

/// A mutating call, as the checker needs to see it before it happens.
#[derive(Debug, Clone)]
pub enum Call {
    Launch(Launch),
    TagInstances(Vec<String>, Tags),
    Terminate(Vec<String>),
    Attach(String, Vec<String>),
    TerminateInGroup(String, bool),
    Detach(String, String, bool),
    SetMax(String, i32),
    SetDesired(String, i32),
    TagGroup(String, Tags),
    UntagGroup(String, Vec<String>),
    Send(String, usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub step: u64,
    pub at: Epoch,
    pub invariant: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {} (t+{} s): {}: {}", self.step, self.at - crate::START, self.invariant, self.detail)
    }
}

#[derive(Debug, Clone)]
pub struct Checker {
    opt_in: (String, String),
    /// Serving capacity each group must keep: what it served at the start, lowered to every
    /// desired capacity and MaxSize its operator set since.
    floor: BTreeMap<String, usize>,
    /// Serving instances the world is taking away (an interruption warning, a death), per group,
    /// while they still serve.
    doomed: BTreeMap<String, BTreeSet<String>>,
    /// Every instance the world is taking away, serving or not yet: one that serves a group
    /// later (a copy attached, or passing its health checks, after its warning) is doomed there.
    dying: BTreeSet<String>,
    /// Serving capacity the world took away and the group has not replaced yet: not the tool's
    /// doing.
    lost: BTreeMap<String, usize>,
    serving: BTreeMap<String, BTreeSet<String>>,
    /// When each instance last served its group: a call acts on what the tool read one call
    /// earlier, and an instance may die in between (see `CALL_GAP`).
    last_served: BTreeMap<String, Epoch>,
    /// Groups whose desired capacity the tool lowered last (not the operator): the members the
    /// group then terminates are the tool's doing.
    tool_lowered: BTreeSet<String>,
    /// (min, max, desired) as the operator (or a scaling policy) last set them.
    pub operator: BTreeMap<String, (i32, i32, i32)>,
    ever_opted_in: BTreeSet<String>,
    /// Since when each group in dry-run has been (opted in and in dry-run).
    dry_run_since: BTreeMap<String, Epoch>,
    /// When each invocation last read each group and instance, and the tags it read: a change
    /// to a group that went to dry-run after that read, or one the template's conditions refuse
    /// only because a tag moved since, is a race no reader can close, not the tool's mistake.
    seen: BTreeMap<(String, String), (Epoch, Tags)>,
    pub violations: Vec<Violation>,
    /// Invariant evaluations so far.
    pub checks: u64,
}

/// Members InService, running, and healthy in every target group of the group.
pub fn serving(world: &World, group: &str) -> BTreeSet<String> {
    world.groups[group]
        .members
        .iter()
        .filter(|m| m.lifecycle == Lifecycle::InService)
        .filter(|m| world.instances.get(&m.id).is_some_and(|i| i.state == InstanceState::Running))
        .filter(|m| world.healthy_behind(group, &m.id))
        .map(|m| m.id.clone())
        .collect()
}

impl Checker {
    pub fn new(world: &World, opt_in_key: &str, opt_in_value: &str) -> Checker {
        let mut c = Checker {
            opt_in: (opt_in_key.to_string(), opt_in_value.to_string()),
            floor: BTreeMap::new(),
            doomed: BTreeMap::new(),
            dying: BTreeSet::new(),
            lost: BTreeMap::new(),
            serving: BTreeMap::new(),
            last_served: BTreeMap::new(),
            tool_lowered: BTreeSet::new(),
            operator: BTreeMap::new(),
            ever_opted_in: BTreeSet::new(),
            dry_run_since: BTreeMap::new(),
            seen: BTreeMap::new(),
            violations: Vec::new(),
            checks: 0,
        };
        for (name, g) in &world.groups {
            let now = serving(world, name);
            c.floor.insert(name.clone(), now.len());
            c.serving.insert(name.clone(), now);
            c.operator.insert(name.clone(), (g.min, g.max, g.desired));
        }
        c.note_opt_ins(world);
        c
    }

    pub fn opt_in(&self) -> (&str, &str) {
        (&self.opt_in.0, &self.opt_in.1)
    }

    /// The tool made a call its role in the template does not allow: in AWS it fails.
    pub fn denied(&mut self, world: &World, step: u64, why: String) {
        self.violation(world, step, "a call the template's IAM policy denies", why);
    }

    /// The group carried the opt-in tag at some point of the run.
    pub fn was_opted_in(&self, group: &str) -> bool {
        self.ever_opted_in.contains(group)
    }

    fn opted_in(&self, world: &World, group: &str) -> bool {
        world.groups.get(group).is_some_and(|g| g.tags.get(&self.opt_in.0) == Some(&self.opt_in.1))
    }

    fn note_opt_ins(&mut self, world: &World) {
        for (name, g) in &world.groups {
            if self.opted_in(world, name) {
                self.ever_opted_in.insert(name.clone());
            }
            let dry_run = self.opted_in(world, name)
                && g.tags.get(asg_core::domain::policy::TAG_MODE).is_some_and(|m| m.trim() == "dry-run");
            match dry_run {
                true => _ = self.dry_run_since.entry(name.clone()).or_insert(world.now),
                false => _ = self.dry_run_since.remove(name),
            }
        }
    }

    /// `caller` (an invocation) read these groups, their tags among them.
    pub fn read_groups<'a>(&mut self, world: &World, caller: &str, groups: impl IntoIterator<Item = &'a Group>) {
        for g in groups {
            self.seen.insert((caller.to_string(), g.name.clone()), (world.now, g.tags.clone()));
        }
    }

    /// `caller` read these instances, their tags among them.
    pub fn read_instances<'a>(
        &mut self,
        world: &World,
        caller: &str,
        instances: impl IntoIterator<Item = &'a Instance>,
    ) {
        for i in instances {
            self.seen.insert((caller.to_string(), i.id.clone()), (world.now, i.tags.clone()));
        }
    }

    /// The world with the tags `caller` last read on each group and instance it read.
    pub fn as_read(&self, world: &World, caller: &str) -> World {
        let mut seen = world.clone();
        for ((who, id), (_, tags)) in &self.seen {
            if who != caller {
                continue;
            }
            if let Some(g) = seen.groups.get_mut(id) {
                g.tags = tags.clone();
            } else if let Some(i) = seen.instances.get_mut(id) {
                i.tags = tags.clone();
            }
        }
        seen
    }

    fn violation(&mut self, world: &World, step: u64, invariant: &'static str, detail: String) {
        self.violations.push(Violation { step, at: world.now, invariant, detail });
    }

    /// The operator (or a scaling policy) set the group's desired capacity or MaxSize: the tool
    /// must end there (a MaxSize below desired lowers desired, as in AWS), and capacity may fall
    /// to them.
    pub fn operator_set(&mut self, world: &World, group: &str, desired: Option<i32>, max: Option<i32>) {
        self.tool_lowered.remove(group);
        let g = &world.groups[group];
        let op = self.operator.entry(group.to_string()).or_insert((g.min, g.max, g.desired));
        if let Some(max) = max {
            op.1 = max;
            op.2 = op.2.min(max);
        }
        if let Some(desired) = desired {
            op.2 = desired;
        }
        let floor = self.floor.entry(group.to_string()).or_default();
        *floor = (*floor).min(op.2.max(0) as usize).min(op.1.max(0) as usize);
    }

    /// The world is about to take `instance` away (a warning, a death): if it serves a group,
    /// that group may be short of it until the group has replaced it.
    pub fn doomed(&mut self, world: &World, instance: &str) {
        self.dying.insert(instance.to_string());
        for (name, g) in &world.groups {
            if g.member(instance).is_some() && serving(world, name).contains(instance) {
                self.doomed.entry(name.clone()).or_default().insert(instance.to_string());
            }
        }
    }

    /// Ownership: the tool changes only what is its own, in groups that opted in.
    pub fn before(&mut self, world: &World, call: &Call, step: u64, caller: &str) {
        self.checks += 1;
        let ours = |id: &str| world.instances.get(id).is_some_and(|i| i.by_tool);
        let live = |id: &str| {
            world.instances.get(id).is_some_and(|i| i.state.is_live() && i.dies_at.is_none_or(|(t, _)| t > world.now))
        };
        let member_of: BTreeMap<&str, &str> = world
            .groups
            .values()
            .flat_map(|g| g.members.iter().map(move |m| (m.id.as_str(), g.name.as_str())))
            .collect();
        let group_of = |id: &str| member_of.get(id).map(|g| g.to_string());
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        // In dry-run as the caller last read the group (or without a read of it); switched to
        // dry-run since, the change is a race no reader can close.
        let dry_run = |g: &str| {
            self.dry_run_since.get(g).is_some_and(|since| {
                self.seen.get(&(caller.to_string(), g.to_string())).is_none_or(|(read, _)| read >= since)
            })
        };
        let touches_group = |g: &str, problems: &mut Vec<(&'static str, String)>| {
            if !self.ever_opted_in.contains(g) {
                problems.push(("a group that never opted in is touched", format!("{call:?} on {g}")));
            }
            if dry_run(g) {
                problems.push(("a group in dry-run is changed", format!("{call:?} on {g}")));
            }
        };
        match call {
            Call::Launch(_) | Call::Send(..) => {}
            Call::TagInstances(ids, tags) => {
                if let Some(k) = tags.keys().find(|k| !k.starts_with(OUR_TAG_PREFIX)) {
                    problems.push(("a tag that is not ours is written", format!("{k} on {ids:?}")));
                }
                for id in ids {
                    match group_of(id) {
                        Some(g) => touches_group(&g, &mut problems),
                        None if ours(id) => {}
                        // Left its group by dying since the caller read it (a claim a second
                        // late): the tag goes with the instance, and no read can prevent it.
                        None if !live(id) => {}
                        None => {
                            problems.push(("an instance outside every group that is not ours is tagged", id.clone()))
                        }
                    }
                }
            }
            Call::Terminate(ids) => {
                for id in ids.iter().filter(|id| !ours(id)) {
                    problems.push(("an instance the tool does not own is terminated", id.clone()));
                }
                let launched_for = |id: &String| {
                    world.instances.get(id).and_then(|i| i.tags.get(asg_core::domain::model::TAG_GROUP).cloned())
                };
                if let Some(g) = ids.iter().filter_map(launched_for).find(|g| dry_run(g)) {
                    problems.push(("a group in dry-run is changed", format!("{call:?}: a copy launched for {g}")));
                }
            }
            Call::Attach(g, ids) => {
                touches_group(g, &mut problems);
                for id in ids.iter().filter(|id| !ours(id)) {
                    problems.push(("an instance the tool does not own is attached", id.clone()));
                }
            }
            Call::TerminateInGroup(id, _) => {
                if let Some(g) = group_of(id) {
                    touches_group(&g, &mut problems);
                    // Serving now, or at the tool's read a call ago: it may have died since.
                    let replaced_by_serving_copy = world.instances.values().any(|c| {
                        c.by_tool
                            && c.tags.get(TAG_REPLACES) == Some(id)
                            && self.last_served.get(&c.id).is_some_and(|t| world.now - t <= CALL_GAP)
                    });
                    if !ours(id) && !replaced_by_serving_copy {
                        problems.push((
                            "an instance the tool does not own is terminated",
                            format!("{id} in {g}, and no copy of ours replaces it there"),
                        ));
                    }
                }
            }
            Call::Detach(g, id, _) => {
                touches_group(g, &mut problems);
                if !ours(id) {
                    problems.push(("an instance the tool does not own is detached", id.clone()));
                }
            }
            Call::SetMax(g, max) => {
                touches_group(g, &mut problems);
                let operator = self.operator.get(g).map_or(0, |o| o.1);
                if *max < operator {
                    problems.push(("MaxSize is set below the operator's", format!("{g}: {max} < {operator}")));
                }
            }
            Call::SetDesired(g, desired) => {
                touches_group(g, &mut problems);
                let now = world.groups.get(g).map_or(0, |g| g.desired);
                if *desired > now {
                    problems.push((
                        "desired capacity is raised other than by an attach",
                        format!("{g}: {now} -> {desired}"),
                    ));
                }
            }
            Call::TagGroup(g, tags) => {
                touches_group(g, &mut problems);
                if let Some(k) = tags.keys().find(|k| !k.starts_with(OUR_TAG_PREFIX)) {
                    problems.push(("a tag that is not ours is written", format!("{k} on {g}")));
                }
            }
            Call::UntagGroup(g, keys) => {
                touches_group(g, &mut problems);
                if let Some(k) = keys.iter().find(|k| !k.starts_with(OUR_TAG_PREFIX)) {
                    problems.push(("a tag that is not ours is deleted", format!("{k} on {g}")));
                }
            }
        }
        if let Call::SetDesired(g, _) = call {
            self.tool_lowered.insert(g.clone());
        }
        for (invariant, detail) in problems {
            self.violation(world, step, invariant, detail);
        }
    }

    /// Capacity, after every call and every moment of the world's life.
    pub fn after(&mut self, world: &World, step: u64) {
        self.checks += 1;
        self.note_opt_ins(world);
        let names: Vec<String> = world.groups.keys().cloned().collect();
        for name in names {
            let now = serving(world, &name);
            for id in &now {
                self.last_served.insert(id.clone(), world.now);
            }
            let before = self.serving.remove(&name).unwrap_or_default();
            let doomed = self.doomed.entry(name.clone()).or_default();
            doomed.extend(now.iter().filter(|id| self.dying.contains(*id)).cloned());
            let gone: Vec<String> = doomed.iter().filter(|id| !now.contains(*id)).cloned().collect();
            let lost = self.lost.entry(name.clone()).or_default();
            for id in gone {
                doomed.remove(&id);
                *lost += 1;
            }
            // A scale-in the operator (or a scaling policy) asked for: which member goes is the
            // group's choice (its termination policy does not look at load balancer health, so
            // it may pick a serving instance over a copy still warming up).
            if !self.tool_lowered.contains(&name) {
                *lost += before.difference(&now).filter(|id| world.scale_in_victims.contains(*id)).count();
            }
            // A replacement the group launched itself makes up for a loss; a group back at its
            // desired capacity has none left.
            for id in now.difference(&before) {
                if world.instances.get(id).is_some_and(|i| i.by_group) {
                    *lost = lost.saturating_sub(1);
                }
            }
            if now.len() >= world.groups[&name].desired.max(0) as usize {
                *lost = 0;
            }
            let required = self.floor.get(&name).copied().unwrap_or(0).saturating_sub(*lost);
            let lost = *lost;
            if now.len() < required && before.len() >= required {
                let floor = self.floor.get(&name).copied().unwrap_or(0);
                self.violation(
                    world,
                    step,
                    "serving capacity fell",
                    format!(
                        "{name}: {} serving ({:?}), {required} required ({floor} at most since the start, {lost} lost to the world); left: {:?}",
                        now.len(),
                        now,
                        before.difference(&now).collect::<Vec<_>>()
                    ),
                );
            }
            self.serving.insert(name, now);
        }
    }

    /// Once the account has come to rest: nothing of ours leaked, every group as its operator
    /// left it, no tag of ours left that means nothing, and the policy's mix reached.
    pub fn at_rest(&mut self, world: &World, config: &Config, step: u64) {
        self.checks += 1;
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        let members: BTreeSet<&str> =
            world.groups.values().flat_map(|g| g.members.iter().map(|m| m.id.as_str())).collect();
        let dry_run = |g: &str| {
            world.groups.get(g).is_some_and(|g| {
                self.opted_in(world, &g.name) && GroupState::read(&g.tags, &config.policy).policy.mode == Mode::DryRun
            })
        };
        for i in world.instances.values() {
            let launched_for = i.tags.get(asg_core::domain::model::TAG_GROUP).map(String::as_str).unwrap_or_default();
            // Dry-run changes nothing, leftovers included: a copy whose group went to dry-run
            // mid-swap stays until the group leaves dry-run.
            if i.by_tool && i.state.is_live() && !members.contains(i.id.as_str()) && !dry_run(launched_for) {
                problems.push(("an instance of ours runs outside every group", i.id.clone()));
            }
            let longest = config.claim_ttl.max(config.retry_after_failure);
            if let Some(hold) = i.tags.get(asg_core::domain::model::TAG_HOLD).and_then(|v| Hold::parse(v)) {
                if hold.until() > world.now + longest {
                    problems.push(("a hold that does not expire", format!("{} until {}", i.id, hold.until())));
                }
            }
        }
        let covered = self.reserved(world, config);
        for (name, g) in world.groups.iter().filter(|(name, _)| !dry_run(name)) {
            let state = GroupState::read(&g.tags, &config.policy);
            // `launch-hooks=ignore` on a group whose launch hook installs the application is the
            // operator's mistake: every copy is attached without it and rolled back, one On-Demand
            // instance after another, so the group never comes to rest (capacity and ownership
            // are still checked all along).
            let misconfigured =
                state.policy.ignore_launch_hooks && g.hooks.iter().any(|h| h.kind == Hook::Launching && h.installs_app);
            if let Some(&(min, max, desired)) = self.operator.get(name).filter(|_| !misconfigured) {
                if (g.min, g.max, g.desired) != (min, max, desired) {
                    problems.push((
                        "a group is not as its operator left it",
                        format!(
                            "{name}: min/max/desired {}/{}/{}, operator set {min}/{max}/{desired}",
                            g.min, g.max, g.desired
                        ),
                    ));
                }
            }
            if g.tags.contains_key(TAG_ORIGINAL_MAX) && !misconfigured {
                problems.push((
                    "a tag of ours is left on a group with no swap under way",
                    format!("{name}: {TAG_ORIGINAL_MAX}"),
                ));
            }
            let ended = state.backoffs.expired_zones(world.now);
            if !ended.is_empty() && self.opted_in(world, name) && state.policy.mode != Mode::DryRun {
                problems.push((
                    "a tag of ours is left on a group with no swap under way",
                    format!("{name}: ended backoffs in {ended:?}"),
                ));
            }
            problems.extend(
                self.mix(world, name, &state, &covered).into_iter().map(|d| ("the policy's mix is not reached", d)),
            );
        }
        for (invariant, detail) in problems {
            self.violation(world, step, invariant, detail);
        }
    }

    /// The On-Demand instances of opted-in groups that the account's reservations pay for, as
    /// AWS applies them (by the same pure functions the scanner uses, table-tested against the
    /// documented rules).
    fn reserved(&self, world: &World, config: &Config) -> BTreeSet<String> {
        use asg_core::cloud::{InstanceQuery, LIVE};
        use asg_core::domain::reserved::{coverage, split, usable_by};
        if world.reservations.is_empty() || !config.reserved_instances {
            return BTreeSet::new();
        }
        let groups: Vec<_> =
            world.groups.values().filter(|g| self.opted_in(world, &g.name)).map(|g| world.to_group(g)).collect();
        let states = GroupState::read_all(&groups, &config.policy);
        let names = groups.iter().map(|g| g.name.clone()).collect();
        let members = world.describe_instances(&InstanceQuery::InGroups(names), LIVE);
        let types = world.reservations.iter().flat_map(usable_by).collect();
        let everyone = world.describe_instances(&InstanceQuery::Types(types), LIVE);
        let (outside, inside) = split(&groups, &states, &members, &everyone);
        coverage(&world.reservations, &outside, &inside).covered
    }

    /// Why a group at rest is not what its policy asks, if it is not: an On-Demand instance the
    /// tool could move above the floor (and no reservation pays for), a Spot one below it, or an
    /// outdated one left.
    fn mix(&self, world: &World, name: &str, state: &GroupState, covered: &BTreeSet<String>) -> Vec<String> {
        let g = &world.groups[name];
        if !self.opted_in(world, name) || state.policy.mode != Mode::Enabled || !g.suspended.is_empty() {
            return Vec::new();
        }
        // The tool leaves alone a group whose launch hooks an attached copy would skip; and a
        // copy cannot serve where the hook it skips installs the application (the operator said
        // `ignore` by mistake): each try is rolled back.
        if g.hooks.iter().any(|h| h.kind == Hook::Launching && (h.installs_app || !state.policy.ignore_launch_hooks)) {
            return Vec::new();
        }
        if state.policy.in_flight_limit(g.desired) == 0 {
            // `max-in-flight = 0` pauses the group.
            return Vec::new();
        }
        let group = world.to_group(g);
        let current = world.template_versions(&[(g.template.clone(), g.version.clone())]).into_values().next();
        if current.as_ref().is_some_and(|c| state.paused_since(c).is_some()) {
            return Vec::new();
        }
        let outdated = |id: &str| {
            let Some(c) = &current else { return false };
            let i = &world.instances[id];
            let view = asg_core::domain::model::Instance {
                tags: i.tags.clone(),
                image_id: Some(i.image.clone()),
                ..Default::default()
            };
            drift(&view, c).is_some()
        };
        // `rollout-max-in-flight = 0` holds every replacement of an outdated instance.
        let held = state.policy.rollout && state.policy.rollout_limit(g.desired) == 0;
        let movable = |id: &str| {
            let m = g.member(id);
            let i = world.instances.get(id);
            m.is_some_and(|m| m.lifecycle == Lifecycle::InService && !m.protected && !m.unhealthy)
                && i.is_some_and(|i| i.state == InstanceState::Running && !i.termination_protected)
                && !(held && outdated(id))
        };
        let on_demand: Vec<&str> = g
            .members
            .iter()
            .filter(|m| !m.lifecycle.is_leaving())
            .filter(|m| world.instances.get(&m.id).is_some_and(|i| !i.spot))
            .map(|m| m.id.as_str())
            .collect();
        let floor = state.policy.on_demand_floor(group.desired);
        let mut out = Vec::new();
        if on_demand.len() > floor {
            if let Some(id) = on_demand.iter().find(|id| movable(id) && !covered.contains(**id)) {
                out.push(format!("{name}: {id} is On-Demand, {} On-Demand above a floor of {floor}", on_demand.len()));
            }
        }
        if on_demand.len() < floor {
            if let Some(m) = g.members.iter().find(|m| movable(&m.id) && world.instances[&m.id].spot) {
                out.push(format!("{name}: {} is Spot, {} On-Demand below a floor of {floor}", m.id, on_demand.len()));
            }
        }
        if state.policy.rollout {
            if let Some(m) = g.members.iter().find(|m| movable(&m.id) && outdated(&m.id)) {
                out.push(format!("{name}: {} runs an outdated configuration", m.id));
            }
        }
        out
    }
}
