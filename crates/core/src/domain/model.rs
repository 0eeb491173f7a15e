//! Plain data the planning functions work on, and the tags that carry our state.
//!
//! Durable state lives in tags on the instances and groups themselves, so that no datastore is
//! needed and a crash at any point leaves something the next run can read:
//! - on the copies we launch (Spot, or On-Demand to hold a group's On-Demand floor):
//!   [`TAG_GROUP`], [`TAG_REPLACES`] (its pool and launch time are its own type, zone and
//!   LaunchTime);
//! - on instances being replaced: [`TAG_HOLD`] (claimed by a scan, or set aside after a failure);
//! - on groups where a swap of ours may be attached: [`TAG_SWAP_UNDER_WAY`]; and where its
//!   attach needed MaxSize raised: [`TAG_ORIGINAL_MAX`];
//! - on groups, backed-off Spot pools: [`crate::domain::pools::TAG_BACKOFF_PREFIX`].

use std::collections::BTreeMap;

/// Group the Spot instance was launched for.
pub const TAG_GROUP: &str = "asg-optimiser:group";
/// On-Demand instance the Spot instance replaces.
pub const TAG_REPLACES: &str = "asg-optimiser:replaces";
/// On an On-Demand instance: `claim <epoch>` or `skip <epoch>`, see [`Hold`].
pub const TAG_HOLD: &str = "asg-optimiser:hold";
/// On a group: `<from>:<to>`, the MaxSize it had before our swaps raised it, and the value we
/// last set: see [`MaxRaise`].
pub const TAG_ORIGINAL_MAX: &str = "asg-optimiser:original-max-size";
/// On a copy: `<epoch> <desired>`, when a swap attached it and the desired capacity that attach
/// produced: see [`Attached`].
pub const TAG_ATTACHED: &str = "asg-optimiser:attached";
/// On a copy attached while its swap is not over: `<epoch>`, when the interruption handler got a
/// rebalance recommendation for it. The swap, its one writer, rolls the copy back rather than
/// retire the instance it replaces.
pub const TAG_REBALANCE: &str = "asg-optimiser:rebalance-recommended";
/// On a group: a swap of ours may be attached here (the epoch of the latest attach). Written
/// before every attach, removed by the scanner once no swap of the group is under way. While it
/// is there the swapper and the interruption handler may finish or roll back a swap in the group
/// even after the opt-in tag is gone (their IAM policies grant it on either tag).
pub const TAG_SWAP_UNDER_WAY: &str = "asg-optimiser:swap-under-way";
/// Seconds a swapper invocation may still be running after it started, at least: twice the
/// swapper's timeout in the template.
pub const SWAPPER_SPAN: Epoch = 120;
/// On an instance: the group it is a member of, put on by Auto Scaling at launch and at attach,
/// taken off at detach, and kept by an instance that dies in the group.
pub const TAG_AWS_GROUP: &str = "aws:autoscaling:groupName";
/// Prefix of every tag we own: never copied from an On-Demand instance to its Spot copy.
pub const OUR_TAG_PREFIX: &str = "asg-optimiser:";

/// Seconds since the Unix epoch. Every "now" is passed in, never read deep inside the logic.
pub type Epoch = i64;

pub type Tags = BTreeMap<String, String>;

/// An Auto Scaling group as DescribeAutoScalingGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    pub name: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    pub tags: Tags,
    pub members: Vec<Member>,
    pub launch: LaunchSource,
    pub suspended: Vec<String>,
    /// The ELBv2 target groups (ARNs) and Classic Load Balancers (names) the group registers
    /// its members with: a copy serves once it is healthy in every one of them.
    pub target_groups: Vec<String>,
    pub load_balancers: Vec<String>,
}

impl Group {
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// `copy` (one of ours) replaces an instance that is still a member of this group and not on
    /// its way out, and its swap is not over: that swap is not finished.
    pub fn replaced_still_here(&self, copy: &Instance) -> bool {
        !copy.swap_over()
            && copy.tag(TAG_REPLACES).and_then(|old| self.member(old)).is_some_and(|m| !m.lifecycle.is_leaving())
    }

    pub fn opted_in(&self, key: &str, value: &str) -> bool {
        self.tags.get(key).is_some_and(|v| v == value)
    }

    /// Why we must not touch this group at all right now, if anything.
    pub fn unsupported(&self) -> Option<String> {
        match &self.launch {
            LaunchSource::Template { .. } => {}
            LaunchSource::Configuration => return Some("uses a launch configuration".into()),
            LaunchSource::MixedInstances => return Some("uses a mixed instances policy".into()),
            LaunchSource::None => return Some("has no launch template".into()),
        }
        // Attaching needs Launch; retiring through the group needs Terminate.
        let blocking: Vec<&str> = self
            .suspended
            .iter()
            .map(String::as_str)
            .filter(|p| matches!(*p, "Launch" | "Terminate" | "AddToLoadBalancer"))
            .collect();
        if !blocking.is_empty() {
            return Some(format!("has suspended processes: {}", blocking.join(",")));
        }
        None
    }
}

/// Where an instance is in its group's lifecycle, as DescribeAutoScalingGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Lifecycle {
    #[default]
    Pending,
    PendingWait,
    PendingProceed,
    Quarantined,
    InService,
    EnteringStandby,
    Standby,
    Terminating,
    TerminatingWait,
    TerminatingProceed,
    Terminated,
    Detaching,
    Detached,
    /// Warm-pool states and any state added after this was written.
    Other(String),
}

impl Lifecycle {
    const NAMES: [(Lifecycle, &'static str); 13] = [
        (Lifecycle::Pending, "Pending"),
        (Lifecycle::PendingWait, "Pending:Wait"),
        (Lifecycle::PendingProceed, "Pending:Proceed"),
        (Lifecycle::Quarantined, "Quarantined"),
        (Lifecycle::InService, "InService"),
        (Lifecycle::EnteringStandby, "EnteringStandby"),
        (Lifecycle::Standby, "Standby"),
        (Lifecycle::Terminating, "Terminating"),
        (Lifecycle::TerminatingWait, "Terminating:Wait"),
        (Lifecycle::TerminatingProceed, "Terminating:Proceed"),
        (Lifecycle::Terminated, "Terminated"),
        (Lifecycle::Detaching, "Detaching"),
        (Lifecycle::Detached, "Detached"),
    ];

    pub fn parse(raw: &str) -> Lifecycle {
        Self::NAMES
            .iter()
            .find(|(_, name)| *name == raw)
            .map_or_else(|| Lifecycle::Other(raw.to_string()), |(l, _)| l.clone())
    }

    pub fn as_str(&self) -> &str {
        match self {
            Lifecycle::Other(raw) => raw,
            known => Self::NAMES.iter().find(|(l, _)| l == known).map_or("", |(_, name)| name),
        }
    }

    /// On its way out of the group (terminating or detaching), or out already.
    pub fn is_leaving(&self) -> bool {
        matches!(
            self,
            Lifecycle::Terminating
                | Lifecycle::TerminatingWait
                | Lifecycle::TerminatingProceed
                | Lifecycle::Terminated
                | Lifecycle::Detaching
                | Lifecycle::Detached
        )
    }
}

impl std::fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An instance as its group sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Member {
    pub id: String,
    pub lifecycle: Lifecycle,
    pub healthy: bool,
    pub protected_from_scale_in: bool,
}

/// What the group launches from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LaunchSource {
    /// A launch template, `version` as the group names it (`$Latest`, `$Default` or a number).
    Template {
        id: String,
        version: String,
    },
    Configuration,
    MixedInstances,
    #[default]
    None,
}

/// An EC2 instance's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InstanceState {
    #[default]
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
    /// A state this code does not know: treated as not live.
    Unknown,
}

impl InstanceState {
    pub const ALL: [InstanceState; 6] = [
        InstanceState::Pending,
        InstanceState::Running,
        InstanceState::ShuttingDown,
        InstanceState::Terminated,
        InstanceState::Stopping,
        InstanceState::Stopped,
    ];

    pub fn parse(raw: &str) -> InstanceState {
        Self::ALL.into_iter().find(|s| s.as_str() == raw).unwrap_or(InstanceState::Unknown)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Unknown => "unknown",
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self, InstanceState::Pending | InstanceState::Running)
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An EC2 instance as DescribeInstances reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    pub spot: bool,
    pub instance_type: String,
    pub subnet_id: Option<String>,
    pub availability_zone: Option<String>,
    pub launch_time: Epoch,
    pub tags: Tags,
    pub image_id: Option<String>,
    /// PlatformDetails (`Linux/UNIX`, `Windows`, ...): what a Reserved Instance must match.
    pub platform: String,
    /// `default`, `dedicated` or `host`.
    pub tenancy: String,
    /// Why it last changed state, when EC2 says (`Server.SpotInstanceTermination`,
    /// `Client.InvalidKMSKey.InvalidState`, ...).
    pub state_reason: Option<String>,
}

impl Instance {
    pub fn is_live(&self) -> bool {
        self.state.is_live()
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    /// The hold tag, if present and readable; an unreadable one is treated as absent.
    pub fn hold(&self) -> Option<Hold> {
        self.tag(TAG_HOLD).and_then(Hold::parse)
    }

    /// When a swap attached this copy, and the desired capacity its attach produced, if known.
    pub fn attached(&self) -> Option<Attached> {
        self.tag(TAG_ATTACHED).and_then(Attached::parse)
    }

    /// This copy's swap is over (see [`Netting::Over`]): it no longer replaces anything, even if
    /// the instance it was to replace stays (desired capacity moved meanwhile).
    pub fn swap_over(&self) -> bool {
        self.attached().is_some_and(|r| r.netting == Some(Netting::Over))
    }

    /// Tags to copy onto a Spot copy of this instance: everything but `aws:` tags (which cannot
    /// be created) and ours (which describe this instance, not the copy).
    pub fn copyable_tags(&self) -> impl Iterator<Item = (&String, &String)> {
        self.tags.iter().filter(|(k, _)| !k.starts_with("aws:") && !k.starts_with(OUR_TAG_PREFIX))
    }
}

/// Why an instance is not a candidate until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A scan enqueued it: its replacement is under way. `same_market` when the copy is bought in
    /// the instance's own market (a rollout), so that the floor does not count it as leaving
    /// before its copy exists.
    Claim { until: Epoch, same_market: bool },
    /// Its replacement failed (no capacity, protection, not ready in time): try again later.
    Skip { until: Epoch },
}

const SAME_MARKET: &str = "same-market";

impl Hold {
    pub fn parse(value: &str) -> Option<Hold> {
        let mut words = value.split(' ');
        let (kind, until) = (words.next()?, words.next()?.trim().parse().ok()?);
        let same_market = match words.next() {
            None => false,
            Some(SAME_MARKET) => true,
            Some(_) => return None,
        };
        match kind {
            "claim" => Some(Hold::Claim { until, same_market }),
            "skip" if !same_market => Some(Hold::Skip { until }),
            _ => None,
        }
    }

    pub fn value(&self) -> String {
        match self {
            Hold::Claim { until, same_market: false } => format!("claim {until}"),
            Hold::Claim { until, same_market: true } => format!("claim {until} {SAME_MARKET}"),
            Hold::Skip { until } => format!("skip {until}"),
        }
    }

    pub fn until(&self) -> Epoch {
        match self {
            Hold::Claim { until, .. } | Hold::Skip { until } => *until,
        }
    }
}

/// What a swap recorded on its copy right before attaching it: when, and the desired capacity
/// its attach produces (the desired it read, plus one); then how the swap nets that +1 out.
///
/// The swap decrements desired at the end only if desired is still exactly that: a scaling
/// action or an operator that moved it meanwhile counted the copy in, and their value stands
/// (both instances stay, the swap is [`Netting::Over`]). When the copy or the instance it
/// replaces leaves by another path, the swap gives back its own +1 and no more, once the group
/// has settled. Attaches of one group are netted out youngest first ([`Attached::younger`]), so
/// that each finds desired where its own attach left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    pub at: Epoch,
    pub desired: i32,
    pub netting: Option<Netting>,
}

/// How a swap netted out its attach's +1, written right after the call that did it, so that a
/// later delivery that finds the instance gone knows who removed it. (Written before, it would
/// take an instance that left by itself after a failed call for removed. A crash between the
/// call and the mark leaves none: the later delivery then finds desired one below what the
/// attach made it, which reads as moved, and nets out nothing more.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Netting {
    /// The replaced instance is retired through the group, decrementing.
    Retire,
    /// The copy is taken back out through the group.
    RollBack,
    /// Nothing left to net out: given back, both instances kept, or never attached.
    Over,
    /// Not attached: recorded, then another attach of ours to the group was found under way,
    /// and the swap waits for its turn (see [`Attached::holds_turn`]).
    Waiting,
    /// Attached, then taken out of the group without netting out its +1 (the interruption
    /// handler hands a copy back): pending wherever the copy is, until its swap gives it back.
    Out,
}

impl Netting {
    fn word(self) -> &'static str {
        match self {
            Netting::Retire => "retire",
            Netting::RollBack => "roll-back",
            Netting::Over => "over",
            Netting::Waiting => "waiting",
            Netting::Out => "out",
        }
    }
}

impl Attached {
    pub fn parse(value: &str) -> Option<Attached> {
        let mut words = value.split_whitespace();
        let at = words.next()?.parse().ok()?;
        let desired = words.next()?.parse().ok()?;
        let netting = match words.next() {
            None => None,
            Some(w) => Some(
                [Netting::Retire, Netting::RollBack, Netting::Over, Netting::Waiting, Netting::Out]
                    .into_iter()
                    .find(|n| n.word() == w)?,
            ),
        };
        words.next().is_none().then_some(Attached { at, desired, netting })
    }

    pub fn value(&self) -> String {
        match self.netting {
            Some(n) => format!("{} {} {}", self.at, self.desired, n.word()),
            None => format!("{} {}", self.at, self.desired),
        }
    }

    /// Whether `copy`'s attach to `group` still counts in its desired capacity: recorded, made
    /// (the copy is a member, or died in the group, as the group's own tag on it says; a live
    /// copy outside the group was refused, or is still to be attached, and one that died
    /// outside it never was, unless its record says it was taken out), and not netted out (a
    /// retire or a roll-back is, once the instance it removes is on its way out).
    pub fn pending(copy: &Instance, group: &Group) -> bool {
        let still_here = |id: &str| group.member(id).is_some_and(|m| !m.lifecycle.is_leaving());
        match copy.attached().and_then(|r| r.netting) {
            _ if copy.attached().is_none() => false,
            None => {
                group.member(&copy.id).is_some() || (!copy.is_live() && copy.tag(TAG_AWS_GROUP) == Some(&group.name))
            }
            Some(Netting::Out) => true,
            Some(Netting::Over | Netting::Waiting) => false,
            Some(Netting::Retire) => copy.tag(TAG_REPLACES).is_some_and(still_here),
            Some(Netting::RollBack) => still_here(&copy.id),
        }
    }

    /// Whether `copy`'s attach holds `group`'s turn: a group takes one attach of ours at a time,
    /// so that its desired capacity moves by our hand for one swap only, and any other move is
    /// someone else's. Held by an attach still pending, and by one recorded (not netted) on a
    /// live copy outside the group less than [`SWAPPER_SPAN`] before `now`: a swap that may
    /// still be making it.
    pub fn holds_turn(copy: &Instance, group: &Group, now: Epoch) -> bool {
        let being_made = |r: Attached| r.netting.is_none() && now < r.at + SWAPPER_SPAN;
        Attached::pending(copy, group)
            || (copy.is_live() && group.member(&copy.id).is_none() && copy.attached().is_some_and(being_made))
    }

    /// Seconds after an attach's record past which nothing waits for it any more: every deadline
    /// of its own swap (ready, then healthy after the attach) and the orphan deadline after them
    /// have passed (the orphan deadline exceeds the ready one), so a swap lost to a crash does
    /// not hold its group back for good.
    pub fn patience(healthy_deadline: Epoch, orphan_deadline: Epoch) -> Epoch {
        healthy_deadline + 2 * orphan_deadline
    }

    /// The attaches of ours to `group`, younger than `copy`'s (by time, then id), still pending
    /// (`copies`: our copies launched for the group, in any state), youngest first. Desired
    /// capacity is then what `copy`'s attach made it plus one for each, unless someone else
    /// moved it.
    pub fn younger<'a>(copy: &Instance, copies: &'a [Instance], group: &Group) -> Vec<&'a Instance> {
        let Some(mine) = copy.attached() else { return Vec::new() };
        let mut younger: Vec<(Attached, &Instance)> = copies
            .iter()
            .filter(|c| c.id != copy.id && Attached::pending(c, group))
            .filter_map(|c| Some((c.attached()?, c)))
            .filter(|(r, c)| (r.at, &c.id) > (mine.at, &copy.id))
            .collect();
        younger.sort_by(|(a, x), (b, y)| (b.at, &y.id).cmp(&(a.at, &x.id)));
        younger.into_iter().map(|(_, c)| c).collect()
    }

    /// `copy`'s record as it counts among the group's pending attaches (`copies`). Two swaps that
    /// read the group's desired capacity at once and attach in the same second can record the
    /// same value, when one corrected its record before the other attached; the id orders them,
    /// as [`Attached::younger`] does, and each counts one above those of the same value ordered
    /// before it.
    pub fn counted(copy: &Instance, copies: &[Instance], group: &Group) -> Option<Attached> {
        let mine = copy.attached()?;
        let before = copies
            .iter()
            .filter(|c| c.id < copy.id && Attached::pending(c, group))
            .filter_map(Instance::attached)
            .filter(|r| (r.at, r.desired) == (mine.at, mine.desired))
            .count() as i32;
        Some(Attached { desired: mine.desired + before, ..mine })
    }

    /// Whether taking `copy` (or the instance it replaces) out of a group whose desired capacity
    /// is `desired` should decrement: only if desired is still what the copy's attach made it (a
    /// copy attached by an older version, without a record: as that version did).
    pub fn decrements(copy: &Instance, desired: i32) -> bool {
        copy.attached().is_none_or(|r| r.desired == desired)
    }
}

/// What our swaps did to a group's MaxSize: `<from>:<to>`, it was `from` before the first raise
/// and `to` is the value we set last; `<from>:<before>:<to>` while `before`, a value we set
/// earlier, may still be in place (the tag is written before each change, so a crash can leave
/// the change undone). A tag written by an older version holds `<from>` alone. MaxSize is given
/// back only while it is still a value of ours: a value someone else set stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxRaise {
    pub from: i32,
    pub to: Option<i32>,
    pub before: Option<i32>,
}

impl MaxRaise {
    pub fn parse(value: &str) -> Option<MaxRaise> {
        let numbers: Vec<i32> = value.trim().split(':').map(|n| n.trim().parse().ok()).collect::<Option<_>>()?;
        match numbers[..] {
            [from] => Some(MaxRaise { from, to: None, before: None }),
            [from, to] => Some(MaxRaise { from, to: Some(to), before: None }),
            [from, before, to] => Some(MaxRaise { from, to: Some(to), before: Some(before) }),
            _ => None,
        }
    }

    pub fn value(&self) -> String {
        match (self.before, self.to) {
            (Some(before), Some(to)) => format!("{}:{before}:{to}", self.from),
            (_, Some(to)) => format!("{}:{to}", self.from),
            _ => self.from.to_string(),
        }
    }

    /// Whether MaxSize `max` is a value of ours (an older version's tag: any).
    pub fn ours(&self, max: i32) -> bool {
        self.to.is_none_or(|t| t == max) || self.before == Some(max)
    }

    /// The record to write before setting MaxSize, now `max`, to `to`: a value of ours in place
    /// keeps `from`; otherwise `max` (someone else's value) is the new base.
    pub fn next(previous: Option<MaxRaise>, max: i32, to: i32) -> MaxRaise {
        match previous {
            Some(r) if r.ours(max) => {
                MaxRaise { from: r.from, to: Some(to), before: Some(max).filter(|m| *m != r.from) }
            }
            _ => MaxRaise { from: max, to: Some(to), before: None },
        }
    }
}

/// A launch template version as DescribeLaunchTemplateVersions reports it: what a group whose
/// template names it (directly, or through `$Latest` / `$Default`) launches now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TemplateVersion {
    pub template_id: String,
    pub number: i64,
    /// The AMI, with a `resolve:ssm:` parameter resolved.
    pub image_id: Option<String>,
    pub instance_type: Option<String>,
}

/// A group's lifecycle hook, by the transition it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `autoscaling:EC2_INSTANCE_LAUNCHING`: runs for instances the group launches, never for
    /// attached ones.
    Launching,
    /// `autoscaling:EC2_INSTANCE_TERMINATING`: runs for TerminateInstanceInAutoScalingGroup.
    Terminating,
}

/// A scaling activity of a group, as DescribeScalingActivities reports it (newest first, by
/// start time): what it did (`Terminating EC2 instance: i-...`) and why, both free text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Activity {
    pub description: String,
    pub cause: String,
}

impl Activity {
    /// The desired capacity the group was shrinking to as this activity terminated or detached
    /// an instance, by its cause: a scale-in says it ("...in response to a difference between
    /// desired and actual capacity, shrinking the capacity from 4 to 3"), as do a
    /// TerminateInstanceInAutoScalingGroup and a DetachInstances that decremented ("...in
    /// response to a user request, shrinking the capacity from 4 to 3"); a replacement after a
    /// failed health check, a launch or an attach does not. `None` as well when the cause does
    /// not parse.
    pub fn shrinking_to(&self) -> Option<i32> {
        let d = &self.description;
        if !(d.starts_with("Terminating EC2 instance") || d.starts_with("Detaching EC2 instance")) {
            return None;
        }
        target(&self.cause, "shrinking the capacity from ")
    }

    /// The desired capacity the group was growing to as this activity launched an instance, by
    /// its cause ("...in response to a difference between desired and actual capacity,
    /// increasing the capacity from 3 to 4"); an attach does not count. `None` as well when the
    /// cause does not parse.
    pub fn increasing_to(&self) -> Option<i32> {
        if !self.description.starts_with("Launching a new EC2 instance") {
            return None;
        }
        target(&self.cause, "increasing the capacity from ")
    }

    /// A desired capacity other than `desired` that the group shrank or grew to in an activity
    /// after the attach of `copy` (`activities` newest first, as the service lists them by start
    /// time): below `desired` in a termination or detach, above it in a launch. A replacement of
    /// a member at the same desired capacity names `desired` itself. `None` too when the attach
    /// is not among `activities` (older than the page read): nothing tells what came after it.
    pub fn moved_from(activities: &[Activity], desired: i32, copy: &str) -> Option<i32> {
        let attach = activities.iter().position(|a| {
            a.description.starts_with("Attaching an existing EC2 instance")
                && a.description.split(|c: char| c.is_whitespace() || c == ':' || c == ',').any(|w| w == copy)
        })?;
        activities[..attach].iter().find_map(|a| {
            a.shrinking_to().filter(|d| *d < desired).or_else(|| a.increasing_to().filter(|d| *d > desired))
        })
    }
}

/// `Y` in "<phrase>X to Y" within `cause`.
fn target(cause: &str, phrase: &str) -> Option<i32> {
    let (_, sizes) = cause.split_once(phrase)?;
    let mut words = sizes.split_whitespace();
    let (_from, to, target) = (words.next()?, words.next()?, words.next()?);
    (to == "to").then_some(())?;
    target.trim_end_matches(['.', ',', ';']).parse().ok()
}

/// Readiness of an instance from DescribeInstanceStatus.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    pub state: InstanceState,
    pub system: String,
    pub instance: String,
    /// `None` where the instance has no attached EBS status.
    pub ebs: Option<String>,
}

impl Health {
    /// Both EC2 status checks (and the EBS one where reported) passed.
    pub fn passed(&self) -> bool {
        self.state == InstanceState::Running
            && self.system == "ok"
            && self.instance == "ok"
            && self.ebs.as_deref().is_none_or(|s| s == "ok" || s == "not-applicable")
    }
}

/// Which market a copy is bought in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Market {
    #[default]
    Spot,
    OnDemand,
}

impl Market {
    pub fn of(instance: &Instance) -> Market {
        if instance.spot {
            Market::Spot
        } else {
            Market::OnDemand
        }
    }

    pub fn is_spot(&self) -> bool {
        *self == Market::Spot
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Market::Spot => "Spot",
            Market::OnDemand => "On-Demand",
        }
    }
}

/// What to launch for one replacement: one instance, from the group's launch template, in
/// the replaced instance's subnet, of one of `instance_types`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub market: Market,
    pub template_id: String,
    pub template_version: String,
    pub instance_types: Vec<String>,
    pub subnet_id: String,
    pub tags: Vec<(String, String)>,
    /// Derived from the work item and the request (see [`Launch::token`]), so a redelivered
    /// message cannot launch a second instance.
    pub client_token: String,
}

impl Launch {
    /// The ClientToken for this request on behalf of `work` (the work item's own token): the
    /// same request retried gets the same token, and EC2 answers with the instance it launched
    /// the first time; a different request for the same item (other pools, another market, once
    /// backoffs have changed) gets another, which EC2 would otherwise refuse for good with
    /// `IdempotentParameterMismatch`. At most 64 ASCII characters for a `work` of at most 55.
    pub fn token(&self, work: &str) -> String {
        // FNV-1a: stable across builds and platforms, unlike the standard library's hasher.
        let request = format!(
            "{}|{}|{}|{}|{}",
            self.market.as_str(),
            self.template_id,
            self.template_version,
            self.instance_types.join(","),
            self.subnet_id
        );
        let hash =
            request.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        format!("{work}-{:08x}", hash as u32)
    }
}

/// What CreateFleet gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchResult {
    Launched {
        instance_id: String,
        instance_type: String,
        /// Types whose pools answered with a capacity error while another pool served us.
        empty_pools: Vec<String>,
    },
    /// HTTP 200 with no instance, or an error that means "these pools have nothing now".
    NoCapacity { code: String, message: String },
    /// The request itself is wrong (permissions, parameters, quota): retrying will not help.
    Refused { code: String, message: String },
}

const CAPACITY_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "UnfulfillableCapacity",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
    "InsufficientFreeAddressesInSubnet",
    "capacity-not-available",
];

pub fn is_capacity_error(code: &str) -> bool {
    CAPACITY_CODES.contains(&code)
}

/// Sorts a CreateFleet error code: "this pool is empty now" or "this request is wrong".
pub fn launch_failure(code: &str, message: &str) -> LaunchResult {
    if is_capacity_error(code) {
        LaunchResult::NoCapacity { code: code.into(), message: message.into() }
    } else {
        LaunchResult::Refused { code: code.into(), message: message.into() }
    }
}

/// Formats epoch seconds as RFC 3339 (UTC).
pub fn rfc3339(t: Epoch) -> String {
    aws_smithy_types::DateTime::from_secs(t)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_round_trips_and_rejects_garbage() {
        for hold in [
            Hold::Claim { until: 17, same_market: false },
            Hold::Claim { until: 17, same_market: true },
            Hold::Skip { until: 1_800_000_000 },
        ] {
            assert_eq!(Hold::parse(&hold.value()), Some(hold));
        }
        for bad in ["", "claim", "claim x", "later 5", "claim5", "claim 5 x", "skip 5 same-market"] {
            assert_eq!(Hold::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn terminations_name_the_desired_capacity_they_shrank_to_when_their_cause_says_so() {
        let a = |description: &str, cause: &str| Activity { description: description.into(), cause: cause.into() };
        let scale_in = "At 2026-12-06T20:14:02Z a user request update of AutoScalingGroup constraints to min: 1, \
            max: 6, desired: 3 changing the desired capacity from 4 to 3.  At 2026-12-06T20:14:05Z an instance was \
            taken out of service in response to a difference between desired and actual capacity, shrinking the \
            capacity from 4 to 3.";
        let health = "At 2026-12-06T20:14:05Z an instance was taken out of service in response to an ELB system \
            health check failure.";
        let decremented = "At 2026-12-06T20:14:05Z instance i-1 was taken out of service in response to a user \
            request, shrinking the capacity from 3 to 2.";
        let kept = "At 2026-12-06T20:14:05Z instance i-1 was taken out of service in response to a user request.";
        let launch = "At 2026-12-06T20:15:00Z an instance was started in response to a difference between desired \
            and actual capacity, increasing the capacity from 3 to 4.";
        let terminating = "Terminating EC2 instance: i-1";
        for (activity, want) in [
            (a(terminating, scale_in), Some(3)),
            (a(terminating, decremented), Some(2)),
            (a(terminating, health), None),
            (a(terminating, kept), None),
            (a(terminating, "... shrinking the capacity from four to three."), None),
            (a(terminating, "... shrinking the capacity from 4 3."), None),
            (a("Launching a new EC2 instance: i-3", launch), None),
            (a("Detaching EC2 instance: i-1", decremented), Some(2)),
            (a("Attaching an existing EC2 instance: i-1", decremented), None),
        ] {
            assert_eq!(activity.shrinking_to(), want, "{activity:?}");
        }
        assert_eq!(a("Launching a new EC2 instance: i-3", launch).increasing_to(), Some(4));
        assert_eq!(a("Attaching an existing EC2 instance: i-3", launch).increasing_to(), None);
        // Newest first, as the service lists them; only those after the copy's attach count, and
        // only a capacity other than the one given: a replacement names it.
        let attached = |copy: &str| a(&format!("Attaching an existing EC2 instance: {copy}"), "...");
        let activities = [
            a("Launching a new EC2 instance: i-5", launch.replace("3 to 4", "2 to 3").as_str()),
            attached("i-8"),
            a("Launching a new EC2 instance: i-3", launch),
            attached("i-7"),
            a(terminating, health),
            a("Terminating EC2 instance: i-2", scale_in),
            attached("i-6"),
            a("Terminating EC2 instance: i-4", decremented),
            attached("i-9"),
        ];
        for (desired, copy, want) in [
            (3, "i-9", Some(4)),
            (3, "i-6", Some(4)),
            (3, "i-7", Some(4)),
            (4, "i-9", Some(3)),
            (4, "i-6", Some(3)),
            (4, "i-7", None),
            (3, "i-8", None),
            (2, "i-8", Some(3)),
            (3, "i-1", None),
            (3, "i-", None),
        ] {
            assert_eq!(Activity::moved_from(&activities, desired, copy), want, "desired {desired} after {copy}");
        }
        assert_eq!(Activity::moved_from(&[], 3, "i-9"), None);
    }

    #[test]
    fn copyable_tags_drop_aws_and_our_own() {
        let i = Instance {
            tags: [("Name", "web"), ("aws:autoscaling:groupName", "g"), (TAG_HOLD, "claim 1"), ("team", "a")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let kept: Vec<&str> = i.copyable_tags().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kept, ["Name", "team"]);
    }

    #[test]
    fn health_needs_both_checks_and_ebs_when_reported() {
        let ok = Health { state: InstanceState::Running, system: "ok".into(), instance: "ok".into(), ebs: None };
        assert!(ok.passed());
        assert!(Health { ebs: Some("ok".into()), ..ok.clone() }.passed());
        assert!(!Health { ebs: Some("impaired".into()), ..ok.clone() }.passed());
        assert!(!Health { instance: "initializing".into(), ..ok.clone() }.passed());
        assert!(!Health { system: "insufficient-data".into(), ..ok.clone() }.passed());
        assert!(!Health { state: InstanceState::Pending, ..ok }.passed());
    }

    #[test]
    fn groups_that_cannot_be_swapped_say_why() {
        let template = LaunchSource::Template { id: "lt-1".into(), version: "$Latest".into() };
        let g = Group { launch: template.clone(), ..Default::default() };
        assert_eq!(g.unsupported(), None);
        let g = Group { launch: LaunchSource::Configuration, ..Default::default() };
        assert_eq!(g.unsupported().as_deref(), Some("uses a launch configuration"));
        let g = Group { launch: template.clone(), suspended: vec!["AZRebalance".into()], ..Default::default() };
        assert_eq!(g.unsupported(), None);
        let g = Group { launch: template, suspended: vec!["Launch".into()], ..Default::default() };
        assert_eq!(g.unsupported().as_deref(), Some("has suspended processes: Launch"));
    }

    #[test]
    fn lifecycles_and_states_read_back_and_say_who_is_leaving() {
        for raw in ["Pending:Wait", "InService", "Terminating:Wait", "Detaching", "Warmed:Running"] {
            assert_eq!(Lifecycle::parse(raw).as_str(), raw);
        }
        let leaving: Vec<&str> =
            ["InService", "Standby", "Terminating", "Terminating:Proceed", "Terminated", "Detaching", "Detached"]
                .into_iter()
                .filter(|raw| Lifecycle::parse(raw).is_leaving())
                .collect();
        assert_eq!(leaving, ["Terminating", "Terminating:Proceed", "Terminated", "Detaching", "Detached"]);
        for s in InstanceState::ALL {
            assert_eq!(InstanceState::parse(s.as_str()), s);
        }
        assert_eq!(InstanceState::parse("rebooting"), InstanceState::Unknown);
        assert!(!InstanceState::Unknown.is_live());
    }

    #[test]
    fn a_swap_is_unfinished_while_the_replaced_instance_stays_in_the_group() {
        let copy = Instance { tags: [(TAG_REPLACES.to_string(), "i-1".to_string())].into(), ..Default::default() };
        let group = |lifecycle: Lifecycle| Group {
            members: vec![Member { id: "i-1".into(), lifecycle, ..Default::default() }],
            ..Default::default()
        };
        assert!(group(Lifecycle::InService).replaced_still_here(&copy));
        assert!(group(Lifecycle::Standby).replaced_still_here(&copy));
        assert!(!group(Lifecycle::TerminatingWait).replaced_still_here(&copy));
        assert!(!group(Lifecycle::Detaching).replaced_still_here(&copy));
        assert!(!Group::default().replaced_still_here(&copy));
        assert!(!group(Lifecycle::InService).replaced_still_here(&Instance::default()));
    }

    #[test]
    fn attach_and_max_size_records_read_back_and_refuse_garbage() {
        for netting in [
            None,
            Some(Netting::Retire),
            Some(Netting::RollBack),
            Some(Netting::Over),
            Some(Netting::Waiting),
            Some(Netting::Out),
        ] {
            let a = Attached { at: 1_800_000_000, desired: 6, netting };
            assert_eq!(Attached::parse(&a.value()), Some(a));
        }
        for bad in ["", "1800000000", "x 6", "1800000000 six", "1800000000 6 gone", "1800000000 6 over 7"] {
            assert_eq!(Attached::parse(bad), None, "{bad:?}");
        }
        // Youngest first, among the attaches still pending in the group.
        let copy = |id: &str, replaces: &str, record: Option<&str>| Instance {
            id: id.into(),
            tags: [(TAG_REPLACES.to_string(), replaces.to_string())]
                .into_iter()
                .chain(record.map(|r| (TAG_ATTACHED.to_string(), r.to_string())))
                .collect(),
            ..Default::default()
        };
        let copies = [
            copy("i-a", "i-1", Some("100 4")),
            copy("i-b", "i-2", Some("200 5")),
            copy("i-c", "i-3", Some("300 6 over")),
            copy("i-d", "i-4", Some("100 5")), // same second as i-a: the id orders them
            copy("i-e", "i-5", None),          // launched, not attached yet
            copy("i-f", "i-6", Some("400 6 retire")), // i-6 still here: the retire is to come
            copy("i-g", "i-7", Some("500 6 retire")), // i-7 gone: netted out
            copy("i-h", "i-8", Some("600 6 roll-back")), // i-h gone: netted out
        ];
        let member = |id: &str| Member { id: id.into(), lifecycle: Lifecycle::InService, ..Default::default() };
        let members = ["i-a", "i-b", "i-d", "i-f", "i-6"].map(member).to_vec();
        let group = Group { name: "web".into(), members, ..Default::default() };
        let younger = |c: &Instance| -> Vec<String> {
            Attached::younger(c, &copies, &group).into_iter().map(|y| y.id.clone()).collect()
        };
        assert_eq!(younger(&copies[0]), ["i-f", "i-b", "i-d"]);
        // The same second and the same value: by id, each counts one above those before it.
        let tied =
            [copy("i-a", "i-1", Some("100 5")), copy("i-d", "i-4", Some("100 5")), copy("i-b", "i-2", Some("200 5"))];
        let counted = |c: &Instance| Attached::counted(c, &tied, &group).map(|r| r.desired);
        assert_eq!(tied.iter().map(counted).collect::<Vec<_>>(), [Some(5), Some(6), Some(5)], "i-b: another second");
        assert_eq!(counted(&copies[4]), None, "no record");
        let gone = Group { members: ["i-d", "i-b"].map(member).to_vec(), ..Default::default() };
        assert_eq!(Attached::counted(&tied[1], &tied, &gone).map(|r| r.desired), Some(5), "i-a is not pending");
        assert_eq!(younger(&copies[5]), Vec::<String>::new(), "i-g and i-h are netted out");
        assert_eq!(younger(&copies[4]), Vec::<String>::new(), "no record: nothing to order");
        // Two deliveries of one swap at once: each wrote its own record on the copy, and the one
        // read back (the other's, a moment later) is the copy itself, not a younger attach.
        let rewritten = [copy("i-a", "i-1", Some("105 4"))];
        assert!(Attached::younger(&copies[0], &rewritten, &group).is_empty(), "not younger than itself");
        let pending: Vec<&str> =
            copies.iter().filter(|c| Attached::pending(c, &group)).map(|c| c.id.as_str()).collect();
        assert_eq!(pending, ["i-a", "i-b", "i-d", "i-f"]);
        // One attach at a time: held by a pending attach, and by one recorded lately on a live
        // copy outside the group (its swap may be attaching it); not by one recorded long ago,
        // a record taken back while its swap waits, or a dead copy's netted-out record.
        let now = 700;
        let dead = |c: Instance| Instance { state: InstanceState::Terminated, ..c };
        // Died in the group: Auto Scaling's own tag stays on it.
        let in_group = |mut c: Instance| {
            c.tags.insert(TAG_AWS_GROUP.into(), "web".into());
            c
        };
        let turn = [
            (copy("i-a", "i-1", Some("100 4")), true), // attached, pending
            (copy("i-x", "i-9", Some("650 7")), true), // being attached
            (copy("i-x", "i-9", Some(&format!("{} 7", now - SWAPPER_SPAN))), false), // swap long gone
            (copy("i-x", "i-9", Some("650 7 waiting")), false), // taken back
            (copy("i-e", "i-5", None), false),         // not recorded yet
            (dead(in_group(copy("i-y", "i-9", Some("300 6")))), true), // died after its attach
            (dead(copy("i-y", "i-9", Some("300 6"))), false), // died, never attached
            (dead(copy("i-y", "i-9", Some("300 6 out"))), true), // handed back, +1 kept
            (copy("i-y", "i-9", Some("300 6 out")), true), // the same, still draining
            (dead(copy("i-h", "i-8", Some("600 6 roll-back"))), false), // netted out
        ];
        for (c, holds) in turn {
            assert_eq!(Attached::holds_turn(&c, &group, now), holds, "{} {:?}", c.id, c.tag(TAG_ATTACHED));
        }
        assert_eq!(MaxRaise::parse("5:7"), Some(MaxRaise { from: 5, to: Some(7), before: None }));
        assert_eq!(MaxRaise::parse("5:6:7"), Some(MaxRaise { from: 5, to: Some(7), before: Some(6) }));
        assert_eq!(MaxRaise::parse("5"), Some(MaxRaise { from: 5, to: None, before: None }), "an older version's tag");
        for bad in ["five", "5:", "5:6:7:8", ""] {
            assert_eq!(MaxRaise::parse(bad), None, "{bad:?}");
        }
        // (previous record, MaxSize now, set to) -> record
        let cases = [
            (None, 5, 6, "5:6"),
            (Some("5:6"), 6, 7, "5:6:7"),   // our raise in place: a second raise keeps from
            (Some("5:6:7"), 6, 7, "5:6:7"), // the second raise never happened (a crash): 6 is ours
            (Some("5:6:7"), 7, 8, "5:7:8"),
            (Some("5:6"), 5, 6, "5:6"), // the first raise never happened
            (Some("5:6"), 8, 9, "8:9"), // someone set 8 meanwhile: their value is the new base
            (Some("5:6:7"), 8, 9, "8:9"),
            (Some("5"), 6, 7, "5:6:7"),
            (Some("5:7"), 7, 6, "5:7:6"), // a partial give-back
        ];
        for (previous, max, to, want) in cases {
            let got = MaxRaise::next(previous.and_then(MaxRaise::parse), max, to).value();
            assert_eq!(got, want, "{previous:?} {max} {to}");
        }
    }

    #[test]
    fn a_launch_token_changes_with_the_request_and_only_with_it() {
        let launch = Launch {
            market: Market::Spot,
            template_id: "lt-0123".into(),
            template_version: "3".into(),
            instance_types: vec!["m5.large".into(), "m5a.large".into()],
            subnet_id: "subnet-1".into(),
            tags: vec![],
            client_token: String::new(),
        };
        let work = "aso-i-0123456789abcdef0-1800000000";
        assert_eq!(launch.token(work), launch.token(work), "a retry gets the same token");
        assert_eq!(launch.token(work), Launch { tags: vec![("a".into(), "b".into())], ..launch.clone() }.token(work));
        assert_eq!(launch.token(work).len(), work.len() + 9);
        for other in [
            Launch { instance_types: vec!["m5.large".into()], ..launch.clone() },
            Launch { market: Market::OnDemand, ..launch.clone() },
            Launch { subnet_id: "subnet-2".into(), ..launch.clone() },
        ] {
            assert_ne!(launch.token(work), other.token(work), "{other:?}");
        }
    }

    #[test]
    fn capacity_errors_are_told_from_refusals() {
        assert!(matches!(launch_failure("InsufficientInstanceCapacity", ""), LaunchResult::NoCapacity { .. }));
        assert!(matches!(launch_failure("UnauthorizedOperation", ""), LaunchResult::Refused { .. }));
    }
}
