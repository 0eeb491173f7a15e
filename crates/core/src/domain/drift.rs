//! Configuration drift: which instances run another launch template, version or AMI than their
//! group launches now, and the per-group pause of launches from a configuration whose new
//! instances failed. Pure; the scanner, the spot-creator and the swapper share it.

use crate::domain::model::{Epoch, Instance, TemplateVersion};

/// Set by EC2 on every instance launched from a launch template (by a group, RunInstances or a
/// fleet): the template and the version number it resolved to.
pub const TAG_TEMPLATE_ID: &str = "aws:ec2launchtemplate:id";
pub const TAG_TEMPLATE_VERSION: &str = "aws:ec2launchtemplate:version";
/// On a group: `<fingerprint> <epoch>`, the configuration whose new instances did not pass their
/// status checks during a rollout, and since when; `<fingerprint> <epoch> unserved`, one whose
/// copy never served behind the group's load balancers (see [`Cause`]). No instance is launched
/// from that configuration until the group's template changes or someone removes the tag.
pub const TAG_ROLLOUT_PAUSED: &str = "asg-optimiser:rollout-paused";

/// Why `i` runs another configuration than `current`, if it does. An instance without the
/// launch-template tags (attached by hand, or from an emulator that does not set them) is judged
/// by its AMI alone; without an AMI on either side, it is not outdated.
pub fn drift(i: &Instance, current: &TemplateVersion) -> Option<String> {
    if let Some(id) = i.tag(TAG_TEMPLATE_ID).filter(|id| *id != current.template_id) {
        return Some(format!("launched from {id}, the group now uses {}", current.template_id));
    }
    if let Some(v) = i.tag(TAG_TEMPLATE_VERSION).filter(|v| v.parse::<i64>().ok() != Some(current.number)) {
        return Some(format!("launched from version {v} of {}, now {}", current.template_id, current.number));
    }
    // An AMI still reading `resolve:ssm:...` was not resolved (no permission on the parameter):
    // compare nothing rather than call every instance outdated.
    match (&i.image_id, current.image_id.as_ref().filter(|a| !a.starts_with("resolve:"))) {
        (Some(ami), Some(now)) if ami != now => Some(format!("runs {ami}, the group now launches {now}")),
        _ => None,
    }
}

/// Names a configuration in [`TAG_ROLLOUT_PAUSED`]: `<template id>:<version>:<AMI>`.
pub fn fingerprint(v: &TemplateVersion) -> String {
    format!("{}:{}:{}", v.template_id, v.number, v.image_id.as_deref().unwrap_or_default())
}

/// Why the launches from a configuration are paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A new instance of it failed its status checks while it replaced an older one (a rollout).
    Checks,
    /// An attached copy of it never served behind the group's load balancers: for example a
    /// launch hook that installs the application, which an attached instance skips, tagged
    /// `ignore` by mistake. Every further copy would fail the same way.
    Unserved,
}

const UNSERVED: &str = "unserved";

/// The tag value that pauses the launches from `current`.
pub fn pause_value(current: &TemplateVersion, now: Epoch, cause: Cause) -> String {
    match cause {
        Cause::Checks => format!("{} {now}", fingerprint(current)),
        Cause::Unserved => format!("{} {now} {UNSERVED}", fingerprint(current)),
    }
}

/// A pause as [`TAG_ROLLOUT_PAUSED`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutPause {
    fingerprint: String,
    /// `None` when the tag cannot be read: then it pauses nothing and names no configuration.
    since: Option<Epoch>,
    pub cause: Cause,
}

impl RolloutPause {
    pub fn parse(raw: &str) -> RolloutPause {
        let words: Vec<&str> = raw.split_whitespace().collect();
        let (since, cause) = match words[..] {
            [_, since] => (since.parse().ok(), Cause::Checks),
            [_, since, UNSERVED] => (since.parse().ok(), Cause::Unserved),
            _ => (None, Cause::Checks),
        };
        let fingerprint = words.first().filter(|_| since.is_some()).unwrap_or(&"").to_string();
        RolloutPause { fingerprint, since, cause }
    }

    /// Since when the rollout of `current` is paused, if it is. A pause recorded for another
    /// configuration (the group has moved on) or unreadable is no pause.
    pub fn since(&self, current: &TemplateVersion) -> Option<Epoch> {
        (self.fingerprint == fingerprint(current)).then_some(self.since)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> TemplateVersion {
        TemplateVersion {
            template_id: "lt-1".into(),
            number: 3,
            image_id: Some("ami-new".into()),
            instance_type: Some("m5.large".into()),
        }
    }

    fn instance(tags: &[(&str, &str)], ami: Option<&str>) -> Instance {
        Instance {
            id: "i-00000001".into(),
            image_id: ami.map(str::to_string),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn drift_table() {
        let (id, v) = (TAG_TEMPLATE_ID, TAG_TEMPLATE_VERSION);
        // (tags, AMI, outdated because ...)
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, Option<&'a str>);
        let cases: &[Case] = &[
            (&[(id, "lt-1"), (v, "3")], Some("ami-new"), None),
            (&[(id, "lt-1"), (v, "2")], Some("ami-new"), Some("version 2")),
            (&[(id, "lt-0"), (v, "3")], Some("ami-new"), Some("launched from lt-0")),
            // Same version, but its SSM parameter now resolves to another AMI.
            (&[(id, "lt-1"), (v, "3")], Some("ami-old"), Some("runs ami-old")),
            (&[(id, "lt-1"), (v, "$Latest")], Some("ami-new"), Some("version $Latest")),
            // No template tags: the AMI decides.
            (&[], Some("ami-new"), None),
            (&[], Some("ami-old"), Some("runs ami-old")),
            (&[], None, None),
        ];
        for &(tags, ami, want) in cases {
            let got = drift(&instance(tags, ami), &current());
            match want {
                None => assert_eq!(got, None, "{tags:?} {ami:?}"),
                Some(part) => assert!(got.as_deref().is_some_and(|g| g.contains(part)), "{tags:?} {ami:?}: {got:?}"),
            }
        }
        // A template without an AMI of its own (unusual) judges by template and version only.
        let no_ami = TemplateVersion { image_id: None, ..current() };
        assert_eq!(drift(&instance(&[], Some("ami-old")), &no_ami), None);
        let unresolved = TemplateVersion { image_id: Some("resolve:ssm:/golden/ami".into()), ..current() };
        assert_eq!(drift(&instance(&[], Some("ami-old")), &unresolved), None);
    }

    #[test]
    fn a_pause_holds_only_for_the_configuration_it_names() {
        let pause = RolloutPause::parse(&pause_value(&current(), 1_800_000_000, Cause::Checks));
        assert_eq!((pause.since(&current()), pause.cause), (Some(1_800_000_000), Cause::Checks));
        let unserved = RolloutPause::parse(&pause_value(&current(), 1_800_000_000, Cause::Unserved));
        assert_eq!((unserved.since(&current()), unserved.cause), (Some(1_800_000_000), Cause::Unserved));
        let next = TemplateVersion { number: 4, ..current() };
        assert_eq!(pause.since(&next), None);
        let reresolved = TemplateVersion { image_id: Some("ami-newer".into()), ..current() };
        assert_eq!(pause.since(&reresolved), None);
        for garbage in
            ["garbage", "", "lt-1:3:ami-new soon", "lt-1:3:ami-new 1800000000 bored", "lt-1:3:ami-new 1 unserved x"]
        {
            assert_eq!(RolloutPause::parse(garbage).since(&current()), None, "{garbage:?}");
        }
    }
}
