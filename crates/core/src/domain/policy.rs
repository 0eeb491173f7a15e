//! Per-group policy: template-wide defaults (the configuration) overridden by tags on the group.
//! A tag with an invalid value is reported and the default applies; it never stops a scan.

use serde::{Deserialize, Serialize};

use crate::domain::model::Tags;

/// `enabled` (default), `dry-run` (log every decision, change nothing) or `disabled`.
pub const TAG_MODE: &str = "asg-optimiser:mode";
/// Minimum number of On-Demand instances to keep.
pub const TAG_MIN_ON_DEMAND: &str = "asg-optimiser:min-on-demand";
/// Minimum On-Demand share of desired capacity, in percent (rounded up); the larger minimum wins.
pub const TAG_MIN_ON_DEMAND_PERCENT: &str = "asg-optimiser:min-on-demand-percent";
/// Replacements in flight at once: a count (`3`) or a share of desired capacity (`25%`).
pub const TAG_MAX_IN_FLIGHT: &str = "asg-optimiser:max-in-flight";
/// Instance types a Spot copy may use / must not use: glob patterns, comma-separated.
pub const TAG_ALLOWED_TYPES: &str = "asg-optimiser:allowed-types";
pub const TAG_DENIED_TYPES: &str = "asg-optimiser:denied-types";
/// `enabled` (default) or `disabled`: replace instances that run another launch template,
/// version or AMI than the group's current one.
pub const TAG_ROLLOUT: &str = "asg-optimiser:rollout";
/// Rollout replacements in flight at once: a count or a share of desired capacity.
pub const TAG_ROLLOUT_MAX_IN_FLIGHT: &str = "asg-optimiser:rollout-max-in-flight";
/// Seconds an attached copy has to become healthy behind the group's load balancers.
pub const TAG_HEALTHY_DEADLINE: &str = "asg-optimiser:healthy-deadline";
/// `respect` (default): a group with a launch lifecycle hook gets no copies (an attached
/// instance skips it); `ignore`: the hook does nothing a copy needs.
pub const TAG_LAUNCH_HOOKS: &str = "asg-optimiser:launch-hooks";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Enabled,
    DryRun,
    Disabled,
}

impl Mode {
    /// As the `asg-optimiser:mode` tag and the JSON say it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Enabled => "enabled",
            Mode::DryRun => "dry-run",
            Mode::Disabled => "disabled",
        }
    }

    fn parse(raw: &str) -> Option<Mode> {
        match raw {
            "enabled" | "true" => Some(Mode::Enabled),
            "dry-run" => Some(Mode::DryRun),
            "disabled" | "false" => Some(Mode::Disabled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlight {
    Count(usize),
    Percent(u32),
}

impl InFlight {
    pub fn parse(raw: &str) -> Option<InFlight> {
        match raw.strip_suffix('%') {
            Some(pct) => pct.trim().parse().ok().filter(|p| (1..=100).contains(p)).map(InFlight::Percent),
            None => raw.parse().ok().map(InFlight::Count),
        }
    }
}

/// The policy of one group, or (as the configuration) the defaults every group starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub mode: Mode,
    pub min_on_demand: usize,
    pub min_on_demand_percent: u32,
    pub in_flight: InFlight,
    pub allowed_types: Vec<String>,
    pub denied_types: Vec<String>,
    /// Roll instances of an outdated configuration to the current one.
    pub rollout: bool,
    pub rollout_in_flight: InFlight,
    /// How long after its attach a copy may take to become healthy in every load balancer of
    /// the group, in seconds.
    pub healthy_deadline: i64,
    /// Copies are attached to groups whose launch hooks they skip.
    pub ignore_launch_hooks: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            mode: Mode::Enabled,
            min_on_demand: 0,
            min_on_demand_percent: 0,
            in_flight: InFlight::Percent(10),
            allowed_types: Vec::new(),
            denied_types: Vec::new(),
            rollout: true,
            rollout_in_flight: InFlight::Percent(10),
            healthy_deadline: 600,
            ignore_launch_hooks: false,
        }
    }
}

impl InFlight {
    fn limit(&self, desired: i32) -> usize {
        match *self {
            InFlight::Count(n) => n,
            InFlight::Percent(pct) => (desired.max(0) as usize * pct as usize / 100).max(1),
        }
    }
}

/// `enabled`/`true` or `disabled`/`false`.
pub fn parse_switch(raw: &str) -> Option<bool> {
    match raw {
        "enabled" | "true" => Some(true),
        "disabled" | "false" => Some(false),
        _ => None,
    }
}

/// `respect` or `ignore` (launch lifecycle hooks): whether copies may skip them.
pub fn parse_launch_hooks(raw: &str) -> Option<bool> {
    match raw {
        "respect" => Some(false),
        "ignore" => Some(true),
        _ => None,
    }
}

/// Reads a list of instance-type globs (`m5*, c5.large`); empty means none.
pub fn parse_types(raw: &str) -> Result<Vec<String>, String> {
    let patterns: Vec<String> =
        raw.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()).map(str::to_string).collect();
    match patterns.iter().find(|p| !p.bytes().all(|b| b.is_ascii_alphanumeric() || b".-*?".contains(&b))) {
        Some(bad) => Err(format!("{bad:?} is not an instance type pattern (letters, digits, '.', '-', '*', '?')")),
        None => Ok(patterns),
    }
}

impl Policy {
    /// This policy with the group's tags applied, and a note per tag that could not be read.
    pub fn for_group(&self, tags: &Tags) -> (Policy, Vec<String>) {
        let mut p = self.clone();
        let mut notes = Vec::new();
        let mut read = |key: &str, apply: &mut dyn FnMut(&str) -> Result<(), String>| {
            if let Some(raw) = tags.get(key) {
                if let Err(why) = apply(raw.trim()) {
                    notes.push(format!("tag {key}={raw:?} {why}; using the default"));
                }
            }
        };
        read(TAG_MODE, &mut |raw| {
            p.mode = Mode::parse(raw).ok_or("is not enabled, dry-run or disabled")?;
            Ok(())
        });
        read(TAG_MIN_ON_DEMAND, &mut |raw| {
            p.min_on_demand = raw.parse().map_err(|_| "is not a count")?;
            Ok(())
        });
        read(TAG_MIN_ON_DEMAND_PERCENT, &mut |raw| {
            p.min_on_demand_percent =
                raw.trim_end_matches('%').parse().ok().filter(|n| *n <= 100).ok_or("is not a percentage 0-100")?;
            Ok(())
        });
        read(TAG_MAX_IN_FLIGHT, &mut |raw| {
            p.in_flight = InFlight::parse(raw).ok_or("is not a count or a percentage from 1% to 100%")?;
            Ok(())
        });
        read(TAG_ALLOWED_TYPES, &mut |raw| {
            p.allowed_types = parse_types(raw)?;
            Ok(())
        });
        read(TAG_DENIED_TYPES, &mut |raw| {
            p.denied_types = parse_types(raw)?;
            Ok(())
        });
        read(TAG_ROLLOUT, &mut |raw| {
            p.rollout = parse_switch(raw).ok_or("is not enabled or disabled")?;
            Ok(())
        });
        read(TAG_HEALTHY_DEADLINE, &mut |raw| {
            p.healthy_deadline = raw
                .parse()
                .ok()
                .filter(|s| (1..=86_400).contains(s))
                .ok_or("is not a number of seconds from 1 to 86400")?;
            Ok(())
        });
        read(TAG_LAUNCH_HOOKS, &mut |raw| {
            p.ignore_launch_hooks = parse_launch_hooks(raw).ok_or("is not respect or ignore")?;
            Ok(())
        });
        read(TAG_ROLLOUT_MAX_IN_FLIGHT, &mut |raw| {
            p.rollout_in_flight = InFlight::parse(raw).ok_or("is not a count or a percentage from 1% to 100%")?;
            Ok(())
        });
        (p, notes)
    }

    /// How many On-Demand instances the group keeps: the larger of the count and the share of
    /// desired capacity (rounded up), never more than desired.
    pub fn on_demand_floor(&self, desired: i32) -> usize {
        let desired = desired.max(0) as usize;
        let share = (desired * self.min_on_demand_percent as usize).div_ceil(100);
        self.min_on_demand.max(share).min(desired)
    }

    /// Replacements in flight at once (at least 1 for a percentage; a count of 0 pauses).
    pub fn in_flight_limit(&self, desired: i32) -> usize {
        self.in_flight.limit(desired)
    }

    /// Rollout replacements in flight at once; they count toward [`Self::in_flight_limit`] too.
    pub fn rollout_limit(&self, desired: i32) -> usize {
        self.rollout_in_flight.limit(desired)
    }

    pub fn allows(&self, instance_type: &str) -> bool {
        (self.allowed_types.is_empty() || self.allowed_types.iter().any(|p| glob(p, instance_type)))
            && !self.denied_types.iter().any(|p| glob(p, instance_type))
    }
}

/// How many instances to move to Spot and to On-Demand now, so that the On-Demand count heads to
/// `floor` and no more than `room` replacements start. `on_demand` counts the On-Demand members
/// now; `leaving` those being replaced by Spot; `arriving` the On-Demand copies under way and
/// not attached yet.
pub fn floor_moves(on_demand: usize, leaving: usize, arriving: usize, floor: usize, room: usize) -> (usize, usize) {
    let projected = (on_demand + arriving).saturating_sub(leaving);
    if projected > floor {
        ((projected - floor).min(room), 0)
    } else {
        (0, (floor - projected).min(room))
    }
}

/// Shell-style glob: `*` any run of characters, `?` one character.
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_mode_is_written_as_its_tag_and_its_json_say_it() {
        for mode in [Mode::Enabled, Mode::DryRun, Mode::Disabled] {
            assert_eq!(Mode::parse(mode.as_str()), Some(mode));
            assert_eq!(serde_json::to_value(mode).ok(), Some(serde_json::Value::from(mode.as_str())));
        }
    }

    #[test]
    fn tag_parsing_table() {
        let d = Policy::default();
        // (tags, check, number of notes)
        type Check = fn(&Policy) -> bool;
        type Case<'a> = (&'a [(&'a str, &'a str)], Check, usize);
        let cases: &[Case] = &[
            (&[], |p| *p == Policy::default(), 0),
            (&[(TAG_MODE, "dry-run")], |p| p.mode == Mode::DryRun, 0),
            (&[(TAG_MODE, "disabled")], |p| p.mode == Mode::Disabled, 0),
            (&[(TAG_MODE, " enabled ")], |p| p.mode == Mode::Enabled, 0),
            (&[(TAG_MODE, "maybe")], |p| p.mode == Mode::Enabled, 1),
            (&[(TAG_MIN_ON_DEMAND, "3")], |p| p.min_on_demand == 3, 0),
            (&[(TAG_MIN_ON_DEMAND, "-1")], |p| p.min_on_demand == 0, 1),
            (&[(TAG_MIN_ON_DEMAND, "two")], |p| p.min_on_demand == 0, 1),
            (&[(TAG_MIN_ON_DEMAND_PERCENT, "25")], |p| p.min_on_demand_percent == 25, 0),
            (&[(TAG_MIN_ON_DEMAND_PERCENT, "25%")], |p| p.min_on_demand_percent == 25, 0),
            (&[(TAG_MIN_ON_DEMAND_PERCENT, "101")], |p| p.min_on_demand_percent == 0, 1),
            (&[(TAG_MAX_IN_FLIGHT, "3")], |p| p.in_flight == InFlight::Count(3), 0),
            (&[(TAG_MAX_IN_FLIGHT, "0")], |p| p.in_flight == InFlight::Count(0), 0),
            (&[(TAG_MAX_IN_FLIGHT, "50%")], |p| p.in_flight == InFlight::Percent(50), 0),
            (&[(TAG_MAX_IN_FLIGHT, "0%")], |p| p.in_flight == InFlight::Percent(10), 1),
            (&[(TAG_MAX_IN_FLIGHT, "lots")], |p| p.in_flight == InFlight::Percent(10), 1),
            (&[(TAG_ALLOWED_TYPES, "m5*, c5.large")], |p| p.allowed_types == ["m5*", "c5.large"], 0),
            (&[(TAG_DENIED_TYPES, "*.metal t3*")], |p| p.denied_types == ["*.metal", "t3*"], 0),
            (&[(TAG_DENIED_TYPES, "m5;rm -rf")], |p| p.denied_types.is_empty(), 1),
            (&[(TAG_ROLLOUT, "disabled")], |p| !p.rollout, 0),
            (&[(TAG_ROLLOUT, "off")], |p| p.rollout, 1),
            (&[(TAG_ROLLOUT_MAX_IN_FLIGHT, "2")], |p| p.rollout_in_flight == InFlight::Count(2), 0),
            (&[(TAG_ROLLOUT_MAX_IN_FLIGHT, "200%")], |p| p.rollout_in_flight == InFlight::Percent(10), 1),
            (&[(TAG_HEALTHY_DEADLINE, "900")], |p| p.healthy_deadline == 900, 0),
            (&[(TAG_HEALTHY_DEADLINE, "0")], |p| p.healthy_deadline == 600, 1),
            (&[(TAG_LAUNCH_HOOKS, "ignore")], |p| p.ignore_launch_hooks, 0),
            (&[(TAG_LAUNCH_HOOKS, "skip")], |p| !p.ignore_launch_hooks, 1),
            // One bad tag does not spoil the good ones.
            (&[(TAG_MODE, "x"), (TAG_MIN_ON_DEMAND, "2")], |p| p.min_on_demand == 2 && p.mode == Mode::Enabled, 1),
        ];
        for (pairs, check, notes) in cases {
            let (p, n) = d.for_group(&tags(pairs));
            assert!(check(&p), "{pairs:?}: {p:?}");
            assert_eq!(n.len(), *notes, "{pairs:?}: {n:?}");
        }
        // Group tags override the configured defaults, and defaults apply otherwise.
        let configured = Policy { mode: Mode::DryRun, min_on_demand: 2, ..Policy::default() };
        let (p, _) = configured.for_group(&tags(&[(TAG_MODE, "enabled")]));
        assert_eq!((p.mode, p.min_on_demand), (Mode::Enabled, 2));
    }

    #[test]
    fn floor_table() {
        // (count, percent, desired, floor)
        for (count, pct, desired, want) in [
            (0, 0, 10, 0),
            (2, 0, 10, 2),
            (0, 25, 10, 3),
            (2, 25, 10, 3),
            (5, 25, 10, 5),
            (20, 0, 10, 10),
            (0, 50, 0, 0),
        ] {
            let p = Policy { min_on_demand: count, min_on_demand_percent: pct, ..Policy::default() };
            assert_eq!(p.on_demand_floor(desired), want, "count={count} pct={pct} desired={desired}");
        }
    }

    #[test]
    fn in_flight_limit_table() {
        // (in flight, desired, limit)
        for (in_flight, desired, want) in [
            (InFlight::Percent(10), 0, 1),
            (InFlight::Percent(10), 5, 1),
            (InFlight::Percent(10), 25, 2),
            (InFlight::Percent(10), 100, 10),
            (InFlight::Percent(50), 20, 10),
            (InFlight::Count(3), 10, 3),
            (InFlight::Count(0), 10, 0),
        ] {
            let p = Policy { in_flight, ..Policy::default() };
            assert_eq!(p.in_flight_limit(desired), want, "{in_flight:?} {desired}");
        }
    }

    #[test]
    fn floor_moves_both_ways() {
        // (on_demand, leaving, arriving, floor, room) -> (to_spot, to_on_demand)
        let cases = [
            ((10, 0, 0, 0, 2), (2, 0)), // all may go; limited by room
            ((10, 0, 0, 9, 2), (1, 0)), // only one above the floor
            ((10, 1, 0, 9, 2), (0, 0)), // the one above is already leaving
            ((3, 0, 0, 3, 2), (0, 0)),  // at the floor
            ((1, 0, 0, 3, 5), (0, 2)),  // below: bring two back
            ((1, 0, 1, 3, 5), (0, 1)),  // one already on its way
            ((1, 0, 0, 4, 1), (0, 1)),  // limited by room
            ((0, 0, 0, 0, 0), (0, 0)),
            ((5, 0, 0, 0, 0), (0, 0)), // no room
        ];
        for ((od, leaving, arriving, floor, room), want) in cases {
            assert_eq!(
                floor_moves(od, leaving, arriving, floor, room),
                want,
                "{od} {leaving} {arriving} {floor} {room}"
            );
        }
    }

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("m5*", "m5.large", true),
            ("m5*", "m5a.large", true),
            ("*.metal", "m5.metal", true),
            ("*.metal", "m5.large", false),
            ("m?.large", "m5.large", true),
            ("m?.large", "m5a.large", false),
            ("t3.nano", "t3.nano", true),
            ("", "a", false),
            ("*", "", true),
        ] {
            assert_eq!(glob(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn type_filters() {
        let p = Policy {
            allowed_types: vec!["m5*".into(), "r5.large".into()],
            denied_types: vec!["*.metal".into()],
            ..Policy::default()
        };
        assert!(p.allows("m5a.large"));
        assert!(p.allows("r5.large"));
        assert!(!p.allows("c5.large"));
        assert!(!p.allows("m5.metal"));
        assert!(Policy::default().allows("anything.large"));
        assert!(parse_types("").unwrap().is_empty());
    }
}
