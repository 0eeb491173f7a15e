//! Reserved Instance coverage: which On-Demand instances of the opted-in groups a reservation
//! already pays for. Replacing such an instance with Spot saves nothing (the reservation is
//! billed either way) and adds interruption risk, so the scanner keeps it On-Demand.
//!
//! The matching follows how AWS applies reservations to the bill: zonal reservations first (exact
//! type and Availability Zone), then regional ones; a regional Linux/UNIX reservation of default
//! tenancy is size-flexible within its family, counted in normalized units, smallest instance
//! first. On-Demand instances outside the opted-in groups are served first: the scanner cannot
//! move them, and assuming they take the reservations means an instance is never kept On-Demand
//! on the strength of a reservation that is really paying for something else. They may use part
//! of a reservation, as AWS bills them. An instance inside a group is covered only when what is
//! left pays for all of it: a half-covered one still costs On-Demand for the other half, so it
//! stays a candidate for Spot and takes nothing.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::domain::model::{Group, Instance, TAG_REPLACES};
use crate::domain::policy::Mode;
use crate::domain::state::GroupState;

/// The platform of a size-flexible reservation. An instance that reports no PlatformDetails runs
/// it: the caller passes this, not an empty string.
pub const LINUX: &str = "Linux/UNIX";
/// Shared hardware. An instance that reports no tenancy has it: the caller passes this.
pub const DEFAULT_TENANCY: &str = "default";
/// Normalized units are binary fractions, but sums are compared with some slack all the same.
const EPS: f64 = 1e-9;

/// `<n>xlarge` sizes AWS normalizes (as n `xlarge`s); see [`normalization_factor`].
const XLARGE_MULTIPLES: &[&str] =
    &["2", "3", "4", "6", "8", "9", "10", "12", "16", "18", "24", "32", "48", "56", "112"];

/// One active reservation (or a declared one): `count` instances of `instance_type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    pub instance_type: String,
    /// `Some(az)` for a zonal reservation, `None` for a regional one.
    pub availability_zone: Option<String>,
    pub count: u32,
    /// e.g. [`LINUX`]; from DescribeReservedInstances through [`platform_of_product`].
    pub platform: String,
    /// [`DEFAULT_TENANCY`] or `dedicated`.
    pub tenancy: String,
}

/// A running On-Demand instance, as the coverage needs it. `platform` is its PlatformDetails
/// ([`LINUX`] when absent or empty), `tenancy` its placement tenancy ([`DEFAULT_TENANCY`] when
/// absent): the caller fills the defaults. Ordered field by field, for a deterministic tie-break.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OnDemand<'a> {
    pub id: &'a str,
    pub instance_type: &'a str,
    pub availability_zone: &'a str,
    pub platform: &'a str,
    pub tenancy: &'a str,
}

/// What an instance type weighs in a size-flexible reservation, in `small`s, as AWS normalizes it;
/// `None` for a size without a factor.
pub fn normalization_factor(instance_type: &str) -> Option<f64> {
    let (_, size) = instance_type.split_once('.')?;
    match size {
        "nano" => Some(0.25),
        "micro" => Some(0.5),
        "small" => Some(1.0),
        "medium" => Some(2.0),
        "large" => Some(4.0),
        "xlarge" => Some(8.0),
        // Sizes not listed (`metal`, `metal-24xl`) have none: they are matched by exact type only.
        _ => size.strip_suffix("xlarge").filter(|n| XLARGE_MULTIPLES.contains(n))?.parse().ok().map(|n: f64| 8.0 * n),
    }
}

/// The instance types whose instances can use `r`: its own, and for a size-flexible regional
/// reservation every normalized size of its family. Exact names, not `m5.*`: EC2 filters take
/// wildcards, the emulator's `instance-type` filter does not.
pub fn usable_by(r: &Reservation) -> Vec<String> {
    if r.availability_zone.is_some() || flexible(&r.instance_type, &r.platform, &r.tenancy).is_none() {
        return vec![r.instance_type.clone()];
    }
    let f = family(&r.instance_type);
    ["nano", "micro", "small", "medium", "large", "xlarge"]
        .iter()
        .map(|size| format!("{f}.{size}"))
        .chain(XLARGE_MULTIPLES.iter().map(|n| format!("{f}.{n}xlarge")))
        .collect()
}

/// `m5` for `m5.large`, `m5d` for `m5d.xlarge`: what a size-flexible reservation is shared within.
fn family(instance_type: &str) -> &str {
    instance_type.split_once('.').map_or(instance_type, |(f, _)| f)
}

/// The factor, when reservations and instances of this kind share size-flexible units.
fn flexible(instance_type: &str, platform: &str, tenancy: &str) -> Option<f64> {
    (platform == LINUX && tenancy == DEFAULT_TENANCY).then(|| normalization_factor(instance_type)).flatten()
}

/// The platform of a reservation from its ProductDescription, which reads e.g.
/// `Linux/UNIX (Amazon VPC)` for a VPC reservation where the instances it covers say `Linux/UNIX`.
pub fn platform_of_product(desc: &str) -> String {
    let desc = desc.trim();
    desc.strip_suffix(" (Amazon VPC)").unwrap_or(desc).to_string()
}

/// Parses the declared extra capacity (a template parameter: reservations the scanner cannot
/// see, e.g. bought in another account of the organization, whose discount AWS shares):
/// entries separated by commas or whitespace, each `<type>=<count>` (regional, Linux/UNIX,
/// default tenancy: size-flexible) or `<type>@<az>=<count>` (zonal). Empty means none.
pub fn parse_declared(raw: &str) -> Result<Vec<Reservation>, String> {
    let name = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    raw.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let bad = || format!("{entry:?} is not <type>=<count> or <type>@<availability-zone>=<count>");
            let (target, count) = entry.split_once('=').ok_or_else(bad)?;
            let count: u32 = count.parse().map_err(|_| bad())?;
            let (ty, az) = match target.split_once('@') {
                Some((ty, az)) => (ty, Some(az)),
                None => (target, None),
            };
            let typed = ty.split_once('.').is_some_and(|(f, s)| !f.is_empty() && !s.is_empty()) && name(ty);
            if !typed || !az.is_none_or(name) {
                return Err(bad());
            }
            Ok(Reservation {
                instance_type: ty.to_string(),
                availability_zone: az.map(str::to_string),
                count,
                platform: LINUX.to_string(),
                tenancy: DEFAULT_TENANCY.to_string(),
            })
        })
        .collect()
}

/// The account's running On-Demand instances as [`coverage`] takes them: `inside`, the members
/// of the opted-in `groups` (from `members`, their live instances) that the scanner may move;
/// `outside`, every other instance of `everyone` (the account's instances of the reserved types),
/// including members that can never move (scale-in protected, or in a disabled or unsupported
/// group), which are billed like any instance outside. A copy of ours not attached yet takes
/// nothing (the instance it replaces holds the share), nor does one attached while that instance
/// is still there.
pub fn split<'a>(
    groups: &[Group],
    states: &BTreeMap<String, GroupState>,
    members: &'a [Instance],
    everyone: &'a [Instance],
) -> (Vec<OnDemand<'a>>, Vec<OnDemand<'a>>) {
    let mut movable = BTreeSet::new();
    let mut member_of: BTreeMap<&str, &Group> = BTreeMap::new();
    for g in groups {
        let disabled = states.get(&g.name).is_some_and(|s| s.policy.mode == Mode::Disabled);
        let fixed = disabled || g.unsupported().is_some();
        for m in &g.members {
            member_of.insert(m.id.as_str(), g);
            if !fixed && !m.protected_from_scale_in {
                movable.insert(m.id.as_str());
            }
        }
    }
    let mid_swap = |i: &Instance| member_of.get(i.id.as_str()).is_some_and(|g| g.replaced_still_here(i));
    let ours_unattached = |i: &Instance| i.tag(TAG_REPLACES).is_some() && !member_of.contains_key(i.id.as_str());
    let on_demand = |i: &&'a Instance| !i.spot && !ours_unattached(i) && !mid_swap(i);
    fn view(i: &Instance) -> OnDemand<'_> {
        OnDemand {
            id: &i.id,
            instance_type: &i.instance_type,
            availability_zone: i.availability_zone.as_deref().unwrap_or_default(),
            platform: &i.platform,
            tenancy: &i.tenancy,
        }
    }
    let outside = everyone.iter().filter(on_demand).filter(|i| !movable.contains(i.id.as_str())).map(view).collect();
    let inside = members.iter().filter(on_demand).filter(|i| movable.contains(i.id.as_str())).map(view).collect();
    (outside, inside)
}

/// What the reservations do for the instances inside the opted-in groups.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Ids of the inside instances the remaining reservations fully cover: keep them On-Demand.
    pub covered: BTreeSet<String>,
    /// Inside instances not fully covered.
    pub uncovered: usize,
    /// Reservations left unused after every instance, as human-readable lines, e.g.
    /// "2 x c5.large in eu-west-1a (zonal)", "1 x c5.large (regional)",
    /// "12 normalized units of m5 (regional, size-flexible)".
    pub unused: Vec<String>,
    /// Unused capacity in normalized units (a reservation of a type without a factor counts 0
    /// here but still appears in `unused`).
    pub unused_units: f64,
}

/// Smallest first (as AWS applies size-flexible units), sizes without a factor last, then by id
/// (and the rest, so that the input order never matters).
fn serving_order(a: &OnDemand, b: &OnDemand) -> Ordering {
    let weight = |i: &OnDemand| normalization_factor(i.instance_type).unwrap_or(f64::INFINITY);
    weight(a).total_cmp(&weight(b)).then_with(|| a.cmp(b))
}

/// `12`, `2.5`: units without a trailing `.0`.
fn units(x: f64) -> String {
    format!("{}", if (x - x.round()).abs() < EPS { x.round() } else { x })
}

/// `outside`: On-Demand instances not in opted-in groups (they consume first, partial use allowed,
/// as AWS bills them); `inside`: On-Demand instances in opted-in groups (covered only if fully
/// covered; a partially coverable one consumes nothing, because it will be replaced, and stays a
/// candidate).
pub fn coverage(reservations: &[Reservation], outside: &[OnDemand], inside: &[OnDemand]) -> Coverage {
    let mut zonal: BTreeMap<(&str, &str, &str, &str), u32> = BTreeMap::new();
    let mut exact: BTreeMap<(&str, &str, &str), u32> = BTreeMap::new();
    let mut flex: BTreeMap<&str, f64> = BTreeMap::new();
    for r in reservations {
        let (ty, p, t) = (r.instance_type.as_str(), r.platform.as_str(), r.tenancy.as_str());
        match (&r.availability_zone, flexible(ty, p, t)) {
            (Some(az), _) => *zonal.entry((ty, az, p, t)).or_default() += r.count,
            (None, Some(f)) => *flex.entry(family(ty)).or_default() += r.count as f64 * f,
            (None, None) => *exact.entry((ty, p, t)).or_default() += r.count,
        }
    }
    fn sorted<'a>(list: &[OnDemand<'a>]) -> Vec<OnDemand<'a>> {
        let mut v = list.to_vec();
        v.sort_by(serving_order);
        v
    }
    // Every pass serves in this order: (is inside, instance).
    let queue: Vec<(bool, OnDemand)> =
        sorted(outside).into_iter().map(|i| (false, i)).chain(sorted(inside).into_iter().map(|i| (true, i))).collect();
    let mut done = vec![false; queue.len()];
    let take_one = |n: Option<&mut u32>| n.filter(|n| **n > 0).map(|n| *n -= 1).is_some();
    for (i, (_, od)) in queue.iter().enumerate() {
        done[i] = take_one(zonal.get_mut(&(od.instance_type, od.availability_zone, od.platform, od.tenancy)));
    }
    for (i, (_, od)) in queue.iter().enumerate() {
        done[i] = done[i] || take_one(exact.get_mut(&(od.instance_type, od.platform, od.tenancy)));
    }
    let mut out = Coverage::default();
    for (i, (is_inside, od)) in queue.iter().enumerate() {
        let f = flexible(od.instance_type, od.platform, od.tenancy).filter(|_| !done[i]);
        if let (Some(f), Some(left)) = (f, flex.get_mut(family(od.instance_type))) {
            if !is_inside {
                *left -= left.min(f);
            } else if *left + EPS >= f {
                *left = (*left - f).max(0.0);
                done[i] = true;
            }
        }
        match (is_inside, done[i]) {
            (true, true) => {
                out.covered.insert(od.id.to_string());
            }
            (true, false) => out.uncovered += 1,
            (false, _) => {}
        }
    }

    let scope = |scope: &str, platform: &str, tenancy: &str| {
        let extra = [(platform, LINUX), (tenancy, DEFAULT_TENANCY)];
        let mut q = vec![scope];
        q.extend(extra.iter().filter(|(v, usual)| v != usual).map(|(v, _)| *v));
        q.join(", ")
    };
    for ((ty, az, p, t), n) in zonal.into_iter().filter(|(_, n)| *n > 0) {
        out.unused.push(format!("{n} x {ty} in {az} ({})", scope("zonal", p, t)));
        out.unused_units += n as f64 * normalization_factor(ty).unwrap_or(0.0);
    }
    for ((ty, p, t), n) in exact.into_iter().filter(|(_, n)| *n > 0) {
        out.unused.push(format!("{n} x {ty} ({})", scope("regional", p, t)));
        out.unused_units += n as f64 * normalization_factor(ty).unwrap_or(0.0);
    }
    for (fam, left) in flex.into_iter().filter(|(_, left)| *left > EPS) {
        out.unused.push(format!("{} normalized units of {fam} (regional, size-flexible)", units(left)));
        out.unused_units += left;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Declared entries, each optionally followed by `/win` (Windows) or `/ded` (dedicated).
    fn ris(spec: &str) -> Vec<Reservation> {
        let one = |entry: &str| {
            let mut parts = entry.split('/');
            let mut r = parse_declared(parts.next().unwrap()).unwrap().remove(0);
            for suffix in parts {
                match suffix {
                    "win" => r.platform = "Windows".into(),
                    _ => r.tenancy = "dedicated".into(),
                }
            }
            r
        };
        spec.split_whitespace().map(one).collect()
    }

    /// `id:type@az` entries, each optionally followed by `/win` or `/ded`.
    fn ods(spec: &str) -> Vec<OnDemand<'_>> {
        fn one(entry: &str) -> OnDemand<'_> {
            let mut parts = entry.split('/');
            let (id, rest) = parts.next().unwrap().split_once(':').unwrap();
            let (instance_type, availability_zone) = rest.split_once('@').unwrap();
            let (platform, tenancy) = (LINUX, DEFAULT_TENANCY);
            let mut i = OnDemand { id, instance_type, availability_zone, platform, tenancy };
            for suffix in parts {
                match suffix {
                    "win" => i.platform = "Windows",
                    _ => i.tenancy = "dedicated",
                }
            }
            i
        }
        spec.split_whitespace().map(one).collect()
    }

    #[test]
    fn coverage_table() {
        // (what, reservations, outside, inside, covered, uncovered, unused units)
        let cases = [
            ("zonal elsewhere", "m5.large@1b=1", "", "a:m5.large@1a", "", 1, 4.0),
            ("regional: any zone", "m5.large=1", "", "a:m5.large@1b", "a", 0, 0.0),
            ("xlarge covers 2 large", "m5.xlarge=1", "", "a:m5.large@1a b:m5.large@1b", "a b", 0, 0.0),
            ("large: half an xlarge", "m5.large=1", "", "a:m5.xlarge@1a", "", 1, 4.0),
            ("smallest first", "m5.large=2", "", "c:m5.xlarge@1a b:m5.large@1a a:m5.large@1a", "a b", 1, 0.0),
            ("partial", "m5.large=3", "", "a:m5.xlarge@1a b:m5.xlarge@1a", "a", 1, 4.0),
            ("other family", "m5.large=1", "", "a:m5d.large@1a", "", 1, 4.0),
            ("outside first", "m5.large=1", "o:m5.large@1a", "a:m5.large@1a", "", 1, 0.0),
            ("outside leaves 2 of 6", "m5.large=1 m5.medium=1", "o:m5.large@1a", "a:m5.large@1a", "", 1, 2.0),
            ("outside uses part", "m5.large=1 m5.medium=1", "o:m5.xlarge@1a", "a:m5.medium@1a", "", 1, 0.0),
            ("outside: zonal first", "m5.large@1a=1 m5.large=1", "o:m5.large@1a", "a:m5.large@1b", "a", 0, 0.0),
            ("zonal before regional", "m5.large=1 m5.large@1a=1", "", "a:m5.large@1a b:m5.large@1b", "a b", 0, 0.0),
            ("metal: exact only", "m5.metal=1 m5.large=1", "", "a:m5.metal@1a b:m5.metal@1a", "a", 1, 4.0),
            ("zonal metal", "m5.metal@1a=1", "", "a:m5.metal@1b b:m5.metal@1a", "b", 1, 0.0),
            ("windows: exact type", "m5.xlarge=1/win", "", "a:m5.large@1a/win b:m5.xlarge@1b/win", "b", 1, 0.0),
            ("windows: not linux", "m5.xlarge=1/win", "", "a:m5.xlarge@1a", "", 1, 8.0),
            ("linux: not windows", "m5.xlarge=1", "", "a:m5.large@1a/win", "", 1, 8.0),
            ("windows zonal", "m5.large@1a=1/win", "", "b:m5.large@1a a:m5.large@1a/win", "a", 1, 0.0),
            ("dedicated: exact type", "c5.xlarge=1/ded", "", "a:c5.large@1a/ded b:c5.xlarge@1a/ded", "b", 1, 0.0),
            ("not default tenancy", "c5.xlarge=1/ded c5.large=1", "", "a:c5.xlarge@1a b:c5.large@1a/ded", "", 2, 12.0),
        ];
        for (what, reservations, outside, inside, covered, uncovered, unused_units) in cases {
            let got = coverage(&ris(reservations), &ods(outside), &ods(inside));
            let got_covered = got.covered.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
            assert_eq!(
                (got_covered.as_str(), got.uncovered, got.unused_units),
                (covered, uncovered, unused_units),
                "{what}"
            );
        }
    }

    #[test]
    fn declared_adds_to_real_and_unused_lines() {
        let real = Reservation {
            instance_type: "m5.large".into(),
            availability_zone: None,
            count: 1,
            platform: platform_of_product("Linux/UNIX (Amazon VPC)"),
            tenancy: DEFAULT_TENANCY.into(),
        };
        let both = [vec![real], parse_declared("m5.large=1").unwrap()].concat();
        let inside = ods("a:m5.large@1a b:m5.large@1b");
        assert_eq!(coverage(&both[..1], &[], &inside).uncovered, 1);
        assert_eq!(coverage(&both, &[], &inside).covered.len(), 2);

        let spec =
            "c5.large@1a=1 c5.large@1a=1 c5.large=1/win/ded m5.2xlarge=1 m5.large=1 m5.metal=1 t3.small=2 t3.nano=2";
        let got = coverage(&ris(spec), &[], &ods("a:m5.xlarge@1a"));
        assert_eq!(
            got.unused,
            [
                "2 x c5.large in 1a (zonal)",
                "1 x c5.large (regional, Windows, dedicated)",
                "1 x m5.metal (regional)",
                "12 normalized units of m5 (regional, size-flexible)",
                "2.5 normalized units of t3 (regional, size-flexible)",
            ]
        );
        assert_eq!(got.unused_units, 8.0 + 4.0 + 12.0 + 2.5);
    }

    #[test]
    fn input_order_does_not_matter() {
        let mut reservations = ris("m5.large@1a=1 m5.xlarge=1 m5.large=1 c5.large=1 c5.large@1b=2 m5.large=1/win");
        let mut outside = ods("o1:m5.large@1b o2:c5.xlarge@1a o3:m5.medium@1a");
        let mut inside = ods("i1:m5.large@1a i2:m5.large@1b i3:m5.xlarge@1b i4:c5.large@1b i5:m5.large@1a/win");
        inside.extend(ods("i6:m5.small@1a i7:m5.metal@1a i8:c5.large@1b"));
        let want = coverage(&reservations, &outside, &inside);
        assert_eq!(want.covered.len() + want.uncovered, inside.len());
        for n in 1..12 {
            let (r, i) = (n % reservations.len(), n % inside.len());
            reservations.rotate_left(r);
            outside.reverse();
            inside.rotate_left(i);
            if n % 2 == 0 {
                inside.reverse();
            }
            assert_eq!(coverage(&reservations, &outside, &inside), want, "permutation {n}");
        }
    }

    #[test]
    fn declared_parsing() {
        assert_eq!(parse_declared(""), Ok(vec![]));
        assert_eq!(parse_declared(" , "), Ok(vec![]));
        let got = parse_declared("m5.large=2, c5.xlarge@eu-west-1a=1").unwrap();
        let want = |ty: &str, az: Option<&str>, count| Reservation {
            instance_type: ty.into(),
            availability_zone: az.map(Into::into),
            count,
            platform: LINUX.into(),
            tenancy: DEFAULT_TENANCY.into(),
        };
        assert_eq!(got, [want("m5.large", None, 2), want("c5.xlarge", Some("eu-west-1a"), 1)]);
        let malformed =
            ["m5.large", "m5.large=x", "=3", "m5.large@=2", "m5.large=-1", "m5=1", "@eu-west-1a=1", "a.b@c@d=1"];
        for bad in malformed {
            let err = parse_declared(&format!("c5.large=1 {bad}")).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")) && err.contains("<type>=<count>"), "{bad}: {err}");
        }
    }

    #[test]
    fn reservations_name_the_instance_types_that_can_use_them() {
        let r = |t: &str, az: Option<&str>, platform: &str| Reservation {
            instance_type: t.into(),
            availability_zone: az.map(str::to_string),
            count: 1,
            platform: platform.into(),
            tenancy: DEFAULT_TENANCY.into(),
        };
        let flexible = usable_by(&r("m5.large", None, LINUX));
        assert_eq!(flexible.len(), 21);
        assert!(flexible.contains(&"m5.nano".to_string()) && flexible.contains(&"m5.112xlarge".to_string()));
        assert!(flexible.iter().all(|t| normalization_factor(t).is_some()));
        assert_eq!(usable_by(&r("m5.large", Some("eu-west-1a"), LINUX)), ["m5.large"]);
        assert_eq!(usable_by(&r("m5.large", None, "Windows")), ["m5.large"]);
        assert_eq!(usable_by(&r("m5.metal", None, LINUX)), ["m5.metal"]);
    }

    #[test]
    fn factors_and_platforms() {
        for (ty, want) in [
            ("m5.large", Some(4.0)),
            ("m5.metal", None),
            ("m7i.metal-24xl", None),
            ("t3.nano", Some(0.25)),
            ("u-6tb1.112xlarge", Some(896.0)),
            ("m5d.24xlarge", Some(192.0)),
            ("m5", None),
        ] {
            assert_eq!(normalization_factor(ty), want, "{ty}");
        }
        assert_eq!(family("m5d.xlarge"), "m5d");
        for (desc, want) in [
            ("Linux/UNIX (Amazon VPC)", "Linux/UNIX"),
            ("Linux/UNIX", "Linux/UNIX"),
            ("Windows (Amazon VPC)", "Windows"),
            ("Red Hat Enterprise Linux", "Red Hat Enterprise Linux"),
        ] {
            assert_eq!(platform_of_product(desc), want);
        }
    }

    #[test]
    fn the_split_keeps_unmovable_members_and_unfinished_copies_out_of_the_inside() {
        use crate::domain::model::{LaunchSource, Lifecycle, Member};
        use crate::domain::policy::TAG_MODE;
        let member = |id: &str, protected: bool| Member {
            id: id.into(),
            lifecycle: Lifecycle::InService,
            healthy: true,
            protected_from_scale_in: protected,
        };
        let od = |id: &str| Instance { id: id.into(), instance_type: "m5.large".into(), ..Default::default() };
        let copy =
            |id: &str, old: &str| Instance { tags: [(TAG_REPLACES.to_string(), old.to_string())].into(), ..od(id) };
        let template = LaunchSource::Template { id: "lt-1".into(), version: "1".into() };
        let web = Group {
            name: "web".into(),
            members: vec![member("i-1", false), member("i-2", true), member("i-3", false), member("i-4", false)],
            launch: template.clone(),
            ..Default::default()
        };
        let off = Group {
            name: "off".into(),
            members: vec![member("i-5", false)],
            launch: template,
            tags: [(TAG_MODE.to_string(), "disabled".to_string())].into(),
            ..Default::default()
        };
        let groups = vec![web, off];
        let states: BTreeMap<String, GroupState> = groups
            .iter()
            .map(|g| (g.name.clone(), GroupState::read(&g.tags, &crate::domain::policy::Policy::default())))
            .collect();
        // i-3 is an On-Demand copy attached while i-1, which it replaces, is still there; i-9 a
        // copy not attached yet; i-8 an instance outside every group.
        let members = vec![od("i-1"), od("i-2"), copy("i-3", "i-1"), od("i-4"), od("i-5")];
        let mut everyone = members.clone();
        everyone.extend([copy("i-9", "i-4"), od("i-8")]);
        let (outside, inside) = split(&groups, &states, &members, &everyone);
        let ids = |v: &[OnDemand]| v.iter().map(|o| o.id.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&inside), ["i-1", "i-4"]);
        assert_eq!(ids(&outside), ["i-2", "i-5", "i-8"]);
    }
}
