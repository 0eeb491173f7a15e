//! The reports as aligned tables for a terminal. Colour only when asked (`main` asks on a
//! terminal without `NO_COLOR`).

use asg_core::domain::model::Market;
use asg_core::domain::savings::Cost;
use comfy_table::presets::NOTHING;
use comfy_table::{Attribute, Cell, CellAlignment, Color, ContentArrangement, Table};

use crate::report::{PlanReport, StatusReport, Why};

fn table(color: bool, header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_content_arrangement(ContentArrangement::Dynamic);
    if color {
        t.enforce_styling();
    } else {
        t.force_no_tty();
    }
    t.set_header(header.iter().map(|h| Cell::new(h).add_attribute(Attribute::Bold)));
    t
}

fn money(c: &Cost) -> String {
    if c.unpriced > 0 {
        format!("{:.3}+ ({} unpriced)", c.usd_per_hour, c.unpriced)
    } else {
        format!("{:.3}", c.usd_per_hour)
    }
}

fn right(text: impl ToString) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

pub fn plan(r: &PlanReport, color: bool) -> String {
    let mut out = String::new();
    let mut groups = table(
        color,
        &[
            "GROUP",
            "OPTED IN",
            "MODE",
            "DESIRED",
            "MIN",
            "MAX",
            "ON-DEMAND",
            "SPOT",
            "FLOOR",
            "IN FLIGHT",
            "START",
            "$/H NOW",
            "AFTER PLAN",
            "ALL SPOT",
        ],
    );
    for g in &r.groups {
        groups.add_row(vec![
            Cell::new(&g.name),
            Cell::new(if g.opted_in { "yes" } else { "no" }),
            Cell::new(g.mode.as_str()),
            right(g.desired),
            right(g.min),
            right(g.max),
            right(g.on_demand),
            right(g.spot),
            right(g.on_demand_floor),
            right(format!("{}/{}", g.in_flight, g.in_flight_limit)),
            right(g.start.len()),
            right(money(&g.cost.now)),
            right(money(&g.cost.after_plan)),
            right(money(&g.cost.all_spot)),
        ]);
    }
    let t = &r.totals;
    groups.add_row(vec![
        Cell::new(format!("total ({})", t.groups)).add_attribute(Attribute::Bold),
        Cell::new(""),
        Cell::new(""),
        Cell::new(""),
        Cell::new(""),
        Cell::new(""),
        right(t.on_demand),
        right(t.spot),
        Cell::new(""),
        Cell::new(""),
        right(t.to_start),
        right(money(&t.cost.now)),
        right(money(&t.cost.after_plan)),
        right(money(&t.cost.all_spot)),
    ]);
    out.push_str(&groups.to_string());
    out.push('\n');

    let mut instances = table(color, &["GROUP", "INSTANCE", "TYPE", "ZONE", "NEXT SCAN", "WHY"]);
    for g in &r.groups {
        for s in &g.start {
            let (action, colour) = match s.to {
                Market::Spot => ("replace by Spot", Color::Green),
                Market::OnDemand => ("replace by On-Demand", Color::Yellow),
            };
            let why = match (s.why, s.outdated) {
                (Why::Cheaper, false) => "cheaper",
                (Why::Cheaper, true) => "cheaper; outdated",
                (Why::Floor, _) => "below the On-Demand floor",
                (Why::Rollout, _) => "outdated: rollout",
            };
            instances.add_row(vec![
                Cell::new(&g.name),
                Cell::new(&s.instance),
                Cell::new(&s.instance_type),
                Cell::new(&s.zone),
                Cell::new(action).fg(colour),
                Cell::new(why),
            ]);
        }
        for l in &g.left_alone {
            instances.add_row(vec![
                Cell::new(&g.name),
                Cell::new(&l.instance),
                Cell::new(&l.instance_type),
                Cell::new(&l.zone),
                Cell::new("left alone").fg(Color::DarkGrey),
                Cell::new(&l.why),
            ]);
        }
    }
    if instances.row_count() > 0 {
        out.push('\n');
        out.push_str(&instances.to_string());
        out.push('\n');
    }

    let mut said = Vec::new();
    for g in &r.groups {
        if let Some(why) = &g.skipped {
            said.push(format!("{}: left alone: {why}", g.name));
        }
        if let Some(why) = &g.rollout_paused {
            said.push(format!("{}: launches paused: {why}", g.name));
        }
        if g.outdated > 0 {
            said.push(format!("{}: {} outdated instances", g.name, g.outdated));
        }
        said.extend(g.notes.iter().map(|n| format!("{}: {n}", g.name)));
    }
    if let Some(res) = &r.reserved {
        said.push(format!(
            "reservations: {} On-Demand instances covered (kept On-Demand), {} not covered",
            res.covered, res.uncovered
        ));
        said.extend(res.unused.iter().map(|u| format!("reservations: unused: {u}")));
    }
    said.extend(r.notes.iter().cloned());
    if !said.is_empty() {
        out.push('\n');
        for line in said {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str(
        "\n$/H: estimated USD per hour: NOW as running; AFTER PLAN once the next scan's replacements are done;\n\
         ALL SPOT once every replaceable On-Demand instance above the floor is on Spot (a copy priced as its\n\
         instance's type in its zone). IN FLIGHT: replacements under way / at once.\n",
    );
    if !r.as_if_opted_in {
        out.push_str("Only opted-in groups; --all-groups plans every group as if it were opted in.\n");
    }
    out
}

fn age(seconds: Option<i64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 120 => format!("{s}s"),
        Some(s) if s < 7200 => format!("{}m", s / 60),
        Some(s) => format!("{}h", s / 3600),
    }
}

pub fn status(r: &StatusReport, color: bool) -> String {
    let mut out = String::new();
    if r.swaps.is_empty() {
        out.push_str("No replacement under way.\n");
    } else {
        let mut swaps = table(color, &["GROUP", "INSTANCE", "COPY", "MARKET", "STAGE", "AGE", "DEADLINE"]);
        for s in &r.swaps {
            swaps.add_row(vec![
                Cell::new(&s.group),
                Cell::new(&s.instance),
                Cell::new(s.copy.as_deref().unwrap_or("-")),
                Cell::new(s.market.map_or("-", |m| m.as_str())),
                Cell::new(s.stage.as_str()).fg(Color::Cyan),
                right(age(s.age_seconds)),
                Cell::new(s.deadline.as_deref().unwrap_or("-")),
            ]);
        }
        out.push_str(&swaps.to_string());
        out.push('\n');
    }
    let mut lines = Vec::new();
    lines.extend(r.set_aside.iter().map(|s| format!("{}: {} set aside until {}", s.group, s.instance, s.until)));
    lines.extend(r.backed_off.iter().map(|b| {
        let pool = if b.instance_type == "*" { "every Spot pool".to_string() } else { b.instance_type.clone() };
        format!("{}: {pool} in {} backed off until {}", b.group, b.zone, b.until)
    }));
    lines.extend(r.rollouts_paused.iter().map(|p| format!("{}: launches paused: {}", p.group, p.why)));
    lines.extend(r.max_raised.iter().map(|m| format!("{}: MaxSize raised from {} (now {})", m.group, m.from, m.max)));
    lines.extend(r.leftovers.iter().map(|l| format!("{}: next scan will {}", l.group, l.what)));
    lines.extend(r.notes.iter().cloned());
    if !lines.is_empty() {
        out.push('\n');
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str(
        "\nSTAGE: queued (claimed, not launched yet), launched, waiting for status checks, attached, waiting\n\
         for the load balancer. DEADLINE: when that stage gives up and the instance is kept.\n",
    );
    out
}
