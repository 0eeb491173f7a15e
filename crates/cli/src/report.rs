//! What `plan` and `status` report: built from the scanner's own reads and planning
//! ([`survey`]) and from the tags the functions write, never by a second implementation. The
//! JSON shape (`version` 1) is documented in the README; a field is added, never renamed.

use std::collections::{BTreeMap, BTreeSet};

use asg_core::cloud::Cloud;
use asg_core::config::Config;
use asg_core::domain::drift::drift;
use asg_core::domain::housekeeping::housekeeping;
use asg_core::domain::model::{rfc3339, Epoch, Hold, Instance, Market, TAG_GROUP, TAG_REPLACES};
use asg_core::domain::plan::GroupPlan;
use asg_core::domain::policy::Mode;
use asg_core::domain::pools::ALL_POOLS;
use asg_core::domain::savings::{self, hourly_cost, Cost};
use asg_core::error::AwsError;
use asg_core::workflows::scan::{survey, Scope, Survey};
use serde::{Deserialize, Serialize};

/// The tag Auto Scaling puts on its members.
use asg_core::domain::model::TAG_AWS_GROUP as GROUP_NAME_TAG;

/// The version of the JSON shape.
pub const VERSION: u32 = 1;

/// Why the command failed; `main` prints it as one line.
#[derive(Debug)]
pub enum Failure {
    Aws(AwsError),
    UnknownGroups(Vec<String>),
}

impl From<AwsError> for Failure {
    fn from(e: AwsError) -> Self {
        Failure::Aws(e)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanReport {
    pub version: u32,
    pub generated_at: String,
    /// Whether groups that are not opted in were planned as if they were (`--all-groups`,
    /// `--group`); otherwise only opted-in groups are listed.
    pub as_if_opted_in: bool,
    pub groups: Vec<GroupReport>,
    /// Reserved-Instance coverage of the planned groups' On-Demand instances (absent when
    /// turned off or when the account has no reservation).
    pub reserved: Option<Reserved>,
    pub totals: Totals,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    pub name: String,
    pub opted_in: bool,
    pub mode: Mode,
    pub desired: i32,
    pub min: i32,
    pub max: i32,
    pub on_demand: usize,
    pub spot: usize,
    pub on_demand_floor: usize,
    pub in_flight: usize,
    pub in_flight_limit: usize,
    /// Why the group gets no replacement at all (disabled, unsupported, launch hook, short of
    /// instances in service).
    pub skipped: Option<String>,
    pub rollout_paused: Option<String>,
    /// Instances running another launch template, version or AMI than the group's current one.
    pub outdated: usize,
    /// What the next scan would start (in a dry-run group: what it would log).
    pub start: Vec<Start>,
    /// On-Demand instances it would not replace, and why.
    pub left_alone: Vec<LeftAlone>,
    pub notes: Vec<String>,
    pub cost: Costs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    pub instance: String,
    pub instance_type: String,
    pub zone: String,
    /// The market of its copy.
    pub to: Market,
    pub why: Why,
    pub outdated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Why {
    /// On-Demand to Spot.
    Cheaper,
    /// Spot to On-Demand: the group is below its On-Demand floor.
    Floor,
    /// An outdated instance replaced by its like from the current configuration.
    Rollout,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftAlone {
    pub instance: String,
    pub instance_type: String,
    pub zone: String,
    pub why: String,
}

/// Estimated cost per hour: now, once this scan's replacements are done, and once every
/// replaceable On-Demand instance above the floor is on Spot. A replacement is priced as its
/// instance's type in its zone (the copy may be of a compatible type).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Costs {
    pub now: Cost,
    pub after_plan: Cost,
    pub all_spot: Cost,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reserved {
    /// On-Demand instances of the planned groups that reservations pay for, and those they do not.
    pub covered: usize,
    pub uncovered: usize,
    /// Reservations no running instance uses.
    pub unused: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub groups: usize,
    pub on_demand: usize,
    pub spot: usize,
    pub to_start: usize,
    pub left_alone: usize,
    pub cost: Costs,
}

/// `asg-optimizer plan`: the scanner's reads and plan, prices, and no action.
pub async fn plan<C: Cloud>(cloud: &C, config: &Config, now: Epoch, scope: &Scope) -> Result<PlanReport, Failure> {
    let survey = survey(cloud, config, now, scope).await?;
    if let Scope::Named(names) = scope {
        let found: BTreeSet<&str> = survey.input.opted_in.iter().map(|g| g.name.as_str()).collect();
        let missing: Vec<String> = names.iter().filter(|n| !found.contains(n.as_str())).cloned().collect();
        if !missing.is_empty() {
            return Err(Failure::UnknownGroups(missing));
        }
    }
    let mut notes = survey.notes.clone();
    let details: BTreeMap<&str, &Instance> = survey.input.instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let (on_demand, spot) = prices(cloud, config, &survey.input.instances, &mut notes).await;
    let mut groups = Vec::new();
    for (g, p) in survey.input.opted_in.iter().zip(&survey.groups) {
        let outdated = |i: &Instance| survey.input.current.get(&g.name).is_some_and(|c| drift(i, c).is_some());
        let starts = p
            .candidates
            .iter()
            .map(|id| (id, Market::Spot, Why::Cheaper))
            .chain(p.to_on_demand.iter().map(|id| (id, Market::OnDemand, Why::Floor)))
            .chain(p.rollout.iter().map(|(id, m)| (id, *m, Why::Rollout)));
        let start: Vec<Start> = starts
            .filter_map(|(id, to, why)| {
                let i = details.get(id.as_str())?;
                Some(Start {
                    instance: id.clone(),
                    instance_type: i.instance_type.clone(),
                    zone: i.availability_zone.clone().unwrap_or_default(),
                    to,
                    why,
                    outdated: outdated(i),
                })
            })
            .collect();
        let members: Vec<&Instance> = g.members.iter().filter_map(|m| details.get(m.id.as_str()).copied()).collect();
        let cost = Costs {
            now: group_cost(&members, &BTreeMap::new(), &on_demand, &spot),
            after_plan: group_cost(&members, &moves(&p.candidates, &p.to_on_demand), &on_demand, &spot),
            all_spot: group_cost(&members, &moves(&p.replaceable, &p.to_on_demand), &on_demand, &spot),
        };
        groups.push(GroupReport {
            name: g.name.clone(),
            opted_in: g.opted_in(&config.opt_in_key, &config.opt_in_value),
            mode: p.mode,
            desired: g.desired,
            min: g.min,
            max: g.max,
            on_demand: p.on_demand,
            spot: p.spot,
            on_demand_floor: p.on_demand_floor,
            in_flight: p.in_flight,
            in_flight_limit: p.limit,
            skipped: p.skipped.clone(),
            rollout_paused: p.rollout_paused.clone(),
            outdated: p.outdated,
            start,
            left_alone: if p.skipped.is_some() || p.rollout_paused.is_some() {
                Vec::new()
            } else {
                p.left_alone
                    .iter()
                    .map(|(id, why)| LeftAlone {
                        instance: id.clone(),
                        instance_type: details.get(id.as_str()).map(|i| i.instance_type.clone()).unwrap_or_default(),
                        zone: details.get(id.as_str()).and_then(|i| i.availability_zone.clone()).unwrap_or_default(),
                        why: why.clone(),
                    })
                    .collect()
            },
            notes: p.notes.clone(),
            cost,
        });
    }
    let sum = |f: fn(&Costs) -> Cost| {
        groups.iter().map(|g| f(&g.cost)).fold(Cost::default(), |a, c| Cost {
            usd_per_hour: a.usd_per_hour + c.usd_per_hour,
            unpriced: a.unpriced + c.unpriced,
        })
    };
    let totals = Totals {
        groups: groups.len(),
        on_demand: groups.iter().map(|g| g.on_demand).sum(),
        spot: groups.iter().map(|g| g.spot).sum(),
        to_start: groups.iter().map(|g| g.start.len()).sum(),
        left_alone: groups.iter().map(|g| g.left_alone.len()).sum(),
        cost: Costs { now: sum(|c| c.now), after_plan: sum(|c| c.after_plan), all_spot: sum(|c| c.all_spot) },
    };
    Ok(PlanReport {
        version: VERSION,
        generated_at: rfc3339(now),
        as_if_opted_in: matches!(scope, Scope::All | Scope::Named(_)),
        reserved: survey.coverage.as_ref().map(|c| Reserved {
            covered: c.covered.len(),
            uncovered: c.uncovered,
            unused: c.unused.clone(),
        }),
        groups,
        totals,
        notes,
    })
}

/// Instance id -> whether it runs on Spot after the moves.
fn moves(to_spot: &[String], to_on_demand: &[String]) -> BTreeMap<String, bool> {
    to_spot.iter().map(|id| (id.clone(), true)).chain(to_on_demand.iter().map(|id| (id.clone(), false))).collect()
}

fn group_cost(
    members: &[&Instance],
    moved: &BTreeMap<String, bool>,
    on_demand: &BTreeMap<String, f64>,
    spot: &BTreeMap<(String, String), f64>,
) -> Cost {
    let priced: Vec<(String, String, bool)> = members
        .iter()
        .map(|i| {
            let on_spot = moved.get(&i.id).copied().unwrap_or(i.spot);
            (i.instance_type.clone(), i.availability_zone.clone().unwrap_or_default(), on_spot)
        })
        .collect();
    hourly_cost(&priced, on_demand, spot)
}

/// The scanner's price lookups (Spot price history per pool, the Price List per type), or the
/// configured table. A failed lookup costs the estimate, with a note, not the plan.
async fn prices<C: Cloud>(
    cloud: &C,
    config: &Config,
    instances: &[Instance],
    notes: &mut Vec<String>,
) -> (BTreeMap<String, f64>, BTreeMap<(String, String), f64>) {
    let pools: Vec<(String, String)> = instances
        .iter()
        .map(|i| (i.instance_type.clone(), i.availability_zone.clone().unwrap_or_default()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if pools.is_empty() {
        return Default::default();
    }
    if !config.price_table.is_empty() {
        return savings::from_table(&config.price_table, &pools);
    }
    let types: Vec<String> = pools.iter().map(|(t, _)| t.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let on_demand = cloud.on_demand_prices(&types).await.unwrap_or_else(|e| {
        notes.push(format!("no On-Demand prices, costs incomplete: {e}"));
        BTreeMap::new()
    });
    let spot = cloud.spot_prices(&types).await.unwrap_or_else(|e| {
        notes.push(format!("no Spot prices, costs incomplete: {e}"));
        BTreeMap::new()
    });
    (on_demand, spot)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: u32,
    pub generated_at: String,
    pub swaps: Vec<Swap>,
    pub set_aside: Vec<SetAside>,
    pub backed_off: Vec<BackedOff>,
    pub rollouts_paused: Vec<Paused>,
    pub max_raised: Vec<MaxRaised>,
    /// What the next scan will clean up or resume.
    pub leftovers: Vec<Leftover>,
    pub notes: Vec<String>,
}

/// One replacement under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swap {
    pub group: String,
    pub instance: String,
    /// Its copy (absent while the claim waits in the queue).
    pub copy: Option<String>,
    pub market: Option<Market>,
    pub stage: Stage,
    /// Seconds since the copy was launched (since the claim was taken, while queued: unknown).
    pub age_seconds: Option<i64>,
    /// When this stage gives up: the claim's expiry, the readiness deadline, the health deadline.
    pub deadline: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Claimed by a scan, its message on the way to the spot-creator.
    Queued,
    /// The copy is starting.
    Launched,
    WaitingForStatusChecks,
    /// Attached, not yet InService, or about to retire the instance it replaces.
    Attached,
    WaitingForTheLoadBalancer,
    /// The group was opted out mid-swap: the swapper takes an attached copy back out, the
    /// scanner cleans up one never attached.
    GroupNotOptedIn,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Queued => "queued",
            Stage::Launched => "launched",
            Stage::WaitingForStatusChecks => "waiting for status checks",
            Stage::Attached => "attached",
            Stage::WaitingForTheLoadBalancer => "waiting for the load balancer",
            Stage::GroupNotOptedIn => "group not opted in",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAside {
    pub group: String,
    pub instance: String,
    pub until: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackedOff {
    pub group: String,
    pub zone: String,
    /// The instance type, or `*` for every type in the zone.
    pub instance_type: String,
    pub until: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub group: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxRaised {
    pub group: String,
    /// MaxSize before our swaps raised it, and now.
    pub from: i32,
    pub max: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leftover {
    pub group: String,
    pub what: String,
}

/// `asg-optimizer status`: what is under way, from the scanner's reads of the opted-in groups and
/// of our copies.
pub async fn status<C: Cloud>(cloud: &C, config: &Config, now: Epoch) -> Result<StatusReport, Failure> {
    let survey = survey(cloud, config, now, &Scope::OptedIn).await?;
    Ok(status_of(&survey, config, now))
}

fn status_of(survey: &Survey, config: &Config, now: Epoch) -> StatusReport {
    let input = &survey.input;
    let plans: BTreeMap<&str, &GroupPlan> = survey.groups.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut swaps = Vec::new();
    for copy in input.spots.iter().filter(|s| s.is_live() && !s.swap_over()) {
        let group = copy.tag(TAG_GROUP).unwrap_or_default();
        let age = now - copy.launch_time;
        let (stage, deadline) = match plans.get(group) {
            // Opted out mid-swap: a copy never attached (the swapper or the scanner terminates
            // it), or attached next to the instance it replaces (the swapper takes it back out).
            // A copy in a group, its swap over, is just a member.
            None if copy.tag(GROUP_NAME_TAG).is_none()
                || input.raised.iter().any(|g| g.name == group && g.replaced_still_here(copy)) =>
            {
                (Stage::GroupNotOptedIn, None)
            }
            None => continue,
            Some(p) => match p.waiting.get(&copy.id).map(String::as_str) {
                // Swapped already: the instance it replaced has gone.
                None => continue,
                Some("status checks") if copy.state == asg_core::domain::model::InstanceState::Pending => {
                    (Stage::Launched, Some(copy.launch_time + config.ready_deadline))
                }
                Some("status checks") => {
                    (Stage::WaitingForStatusChecks, Some(copy.launch_time + config.ready_deadline))
                }
                Some("load balancer health") => (
                    Stage::WaitingForTheLoadBalancer,
                    copy.attached().map(|a| a.at + input.state(group).policy.healthy_deadline),
                ),
                Some(_) => (Stage::Attached, None),
            },
        };
        swaps.push(Swap {
            group: group.to_string(),
            instance: copy.tag(TAG_REPLACES).unwrap_or_default().to_string(),
            copy: Some(copy.id.clone()),
            market: Some(Market::of(copy)),
            stage,
            age_seconds: Some(age),
            deadline: deadline.map(rfc3339),
        });
    }
    let copied: BTreeSet<&str> = input.spots.iter().filter_map(|s| s.tag(TAG_REPLACES)).collect();
    let group_of: BTreeMap<&str, &str> =
        input.opted_in.iter().flat_map(|g| g.members.iter().map(move |m| (m.id.as_str(), g.name.as_str()))).collect();
    let mut set_aside = Vec::new();
    for i in &input.instances {
        let group = group_of.get(i.id.as_str()).copied().unwrap_or_default().to_string();
        match i.hold().filter(|h| h.until() > now) {
            Some(Hold::Claim { until, .. }) if !copied.contains(i.id.as_str()) => swaps.push(Swap {
                group,
                instance: i.id.clone(),
                copy: None,
                market: None,
                stage: Stage::Queued,
                age_seconds: None,
                deadline: Some(rfc3339(until)),
            }),
            Some(Hold::Skip { until }) => {
                set_aside.push(SetAside { group, instance: i.id.clone(), until: rfc3339(until) })
            }
            _ => {}
        }
    }
    swaps.sort_by(|a, b| (&a.group, &a.instance).cmp(&(&b.group, &b.instance)));

    let mut backed_off = Vec::new();
    let mut max_raised = Vec::new();
    let mut notes = survey.notes.clone();
    let mut seen = BTreeSet::new();
    for g in input.opted_in.iter().chain(&input.raised).filter(|g| seen.insert(g.name.as_str())) {
        let state = input.state(&g.name);
        for ((zone, t), until) in state.backoffs.0.iter().filter(|(_, until)| **until > now) {
            backed_off.push(BackedOff {
                group: g.name.clone(),
                zone: zone.clone(),
                instance_type: if t == ALL_POOLS { ALL_POOLS.to_string() } else { t.clone() },
                until: rfc3339(*until),
            });
        }
        match &state.original_max {
            Some(Ok(raise)) => max_raised.push(MaxRaised { group: g.name.clone(), from: raise.from, max: g.max }),
            Some(Err(raw)) => notes.push(format!("group {}: unreadable MaxSize record {raw:?}", g.name)),
            None => {}
        }
        notes.extend(state.notes.iter().map(|n| format!("group {}: {n}", g.name)));
    }
    let rollouts_paused = survey
        .groups
        .iter()
        .filter_map(|p| Some(Paused { group: p.name.clone(), why: p.rollout_paused.clone()? }))
        .collect();

    let chores = housekeeping(input);
    let mut leftovers: Vec<Leftover> = Vec::new();
    leftovers.extend(chores.orphans.iter().map(|o| Leftover {
        group: o.group.clone(),
        what: format!("terminate {}, a copy of ours in no group: {}", o.spot, o.reason),
    }));
    leftovers.extend(chores.stalled.iter().map(|s| Leftover {
        group: s.group.clone(),
        what: format!("resume the swap of {} by {} (its message was lost after the attach)", s.old, s.new),
    }));
    leftovers.extend(chores.repairs.iter().map(|r| Leftover {
        group: r.group.clone(),
        what: match r.set_max {
            Some(max) => format!("give MaxSize back: set it to {max}"),
            None => "rewrite or drop its MaxSize record".to_string(),
        },
    }));
    leftovers.extend(
        chores
            .stale_tags
            .iter()
            .map(|(g, keys)| Leftover { group: g.clone(), what: format!("remove tags {}", keys.join(", ")) }),
    );
    StatusReport {
        version: VERSION,
        generated_at: rfc3339(now),
        swaps,
        set_aside,
        backed_off,
        rollouts_paused,
        max_raised,
        leftovers,
        notes,
    }
}
