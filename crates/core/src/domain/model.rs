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
/// On a group: the MaxSize it had before we raised it by one to attach a Spot instance.
pub const TAG_ORIGINAL_MAX: &str = "asg-optimiser:original-max-size";
/// On a group: a swap of ours may be attached here (the epoch of the latest attach). Written
/// before every attach, removed by the scanner once no swap of the group is under way. While it
/// is there the swapper and the interruption handler may finish or roll back a swap in the group
/// even after the opt-in tag is gone (their IAM policies grant it on either tag).
pub const TAG_SWAP_UNDER_WAY: &str = "asg-optimiser:swap-under-way";
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
}

impl Group {
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// `copy` (one of ours) replaces an instance that is still a member of this group and not on
    /// its way out: that swap is not finished.
    pub fn replaced_still_here(&self, copy: &Instance) -> bool {
        copy.tag(TAG_REPLACES).and_then(|old| self.member(old)).is_some_and(|m| !m.lifecycle.is_leaving())
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
    /// Derived from the work item, so a redelivered message cannot launch a second instance.
    pub client_token: String,
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
    fn capacity_errors_are_told_from_refusals() {
        assert!(matches!(launch_failure("InsufficientInstanceCapacity", ""), LaunchResult::NoCapacity { .. }));
        assert!(matches!(launch_failure("UnauthorizedOperation", ""), LaunchResult::Refused { .. }));
    }
}
