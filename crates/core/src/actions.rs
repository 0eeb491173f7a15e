//! The steps over the [`Cloud`] that more than one workflow takes, each written once: reading a
//! group or its launch template, the compatible Spot types of an instance type, backing off
//! pools, setting an instance aside, sending swap messages, putting a raised MaxSize back, and
//! how a failed call ends a message. The workflows import this module and never each other.

use std::collections::BTreeMap;

use tracing::{error, info, warn};

use crate::cloud::{Cloud, GroupQuery, Outgoing, TypeQuery};
use crate::config::Config;
use crate::domain::housekeeping::{in_dry_run, max_repair, MaxRepair};
use crate::domain::model::{
    rfc3339, Attached, Epoch, Group, Hold, Instance, LaunchSource, MaxRaise, Netting, Tags, TemplateVersion,
    TAG_ATTACHED, TAG_HOLD, TAG_ORIGINAL_MAX,
};
use crate::domain::policy::{Mode, Policy};
use crate::domain::pools::{self, Backoffs};
use crate::domain::state::GroupState;
use crate::error::AwsError;
use crate::message::{to_body, Outcome, SwapRequest};
use crate::metrics::{self, Metrics};

/// Records the ids a message names on the current record's span (opened by the SQS batch
/// runner): the group, the instance being replaced and, once launched, its copy.
pub fn record_ids(group: &str, old: &str, new: Option<&str>) {
    let span = tracing::Span::current();
    span.record("asg", group);
    span.record("old", old);
    if let Some(new) = new {
        span.record("new", new);
    }
}

/// How a failed AWS call ends the message: a missing id is bad input, anything else is retried
/// (and dead-lettered if it keeps failing).
pub fn on_error(what: &str, e: AwsError) -> Outcome {
    if e.is_not_found() {
        Outcome::Rejected(format!("{what}: {e}"))
    } else {
        if !e.transient {
            error!(code = e.code(), error = %e, "{what}");
        }
        Outcome::Retry(format!("{what}: {e}"))
    }
}

/// Why a group's policy forbids any change now, if it does.
pub fn paused(policy: &Policy, group: &str, would: &str) -> Option<Outcome> {
    match policy.mode {
        Mode::Enabled => None,
        Mode::DryRun => {
            info!(asg = %group, dry_run = true, "would {would}");
            Some(Outcome::Dropped(format!("group {group} is in dry-run: would {would}; nothing changed")))
        }
        Mode::Disabled => Some(Outcome::Dropped(format!("group {group} is disabled by tag; nothing changed"))),
    }
}

/// One group by name, read fresh; `None` if it does not exist.
pub async fn read_group<C: Cloud>(cloud: &C, name: &str) -> Result<Option<Group>, AwsError> {
    Ok(cloud.groups(&GroupQuery::Named(vec![name.to_string()])).await?.into_iter().find(|g| g.name == name))
}

/// What the group launches now: its launch template version, read fresh. `None` when the group
/// has no launch template, or the template or version does not exist.
pub async fn current_template<C: Cloud>(cloud: &C, group: &Group) -> Result<Option<TemplateVersion>, AwsError> {
    let LaunchSource::Template { id, version } = &group.launch else { return Ok(None) };
    let key = (id.clone(), version.clone());
    Ok(cloud.template_versions(std::slice::from_ref(&key)).await?.remove(&key))
}

/// The Spot types that can stand in for `instance_type` (see [`pools::compatible`]), from two
/// DescribeInstanceTypes the adapter caches; `None` if EC2 does not know the type.
pub async fn compatible_with<C: Cloud>(
    cloud: &C,
    instance_type: &str,
    factor: f64,
) -> Result<Option<Vec<String>>, AwsError> {
    let Some(original) = cloud.instance_types(&TypeQuery::Named(vec![instance_type.to_string()])).await?.pop() else {
        return Ok(None);
    };
    let catalog = cloud
        .instance_types(&TypeQuery::SpotCapable {
            architecture: original.architecture().to_string(),
            vcpus: pools::vcpu_range(&original, factor),
        })
        .await?;
    Ok(Some(pools::compatible(&original, &catalog, factor)))
}

/// Back off these pools of `group` in `az` for the configured time, in the group's tag (whose
/// entries `backoffs` holds, read with the group a moment ago). A failure costs only an early
/// retry of the pool.
#[allow(clippy::too_many_arguments)]
pub async fn back_off<C: Cloud>(
    cloud: &C,
    config: &Config,
    metrics: &Metrics,
    group: &str,
    backoffs: &Backoffs,
    az: &str,
    types: &[String],
    now: Epoch,
) {
    let until = now + config.pool_backoff;
    let (key, value) = backoffs.with(az, types, until, now);
    match cloud.tag_group(group, &BTreeMap::from([(key, value)])).await {
        Ok(()) => {
            metrics.add(metrics::POOLS_BACKED_OFF, types.len() as f64);
            warn!(asg = %group, az = %az, pools = %types.join(","), until = %rfc3339(until), "Spot pools backed off");
        }
        Err(e) => warn!(asg = %group, az = %az, error = %e, "could not record the pool backoff"),
    }
}

/// Keep the instance and leave it alone for a while, so the scanner does not retry it in a loop.
pub async fn set_aside<C: Cloud>(cloud: &C, config: &Config, old: &str, now: Epoch, why: String) -> Outcome {
    let hold = Hold::Skip { until: now + config.retry_after_failure };
    let tags = BTreeMap::from([(TAG_HOLD.to_string(), hold.value())]);
    if let Err(e) = cloud.tag_instances(&[old.to_string()], &tags).await {
        warn!(old = %old, error = %e, "could not set the instance aside; its claim will expire instead");
    }
    Outcome::Dropped(format!("{why}; {old} kept until at least {}", rfc3339(hold.until())))
}

/// Records on `copy` how its attach's +1 on desired capacity is netted out (`None`: not yet):
/// see [`Netting`]. Nothing to record on a copy without a record of its attach.
pub async fn mark<C: Cloud>(cloud: &C, copy: &Instance, netting: Option<Netting>) -> Result<(), AwsError> {
    let Some(record) = copy.attached() else { return Ok(()) };
    mark_record(cloud, &copy.id, record, netting).await
}

/// [`mark`], for a copy known by its id and the record read on it.
pub async fn mark_record<C: Cloud>(
    cloud: &C,
    id: &str,
    record: Attached,
    netting: Option<Netting>,
) -> Result<(), AwsError> {
    let tag = Tags::from([(TAG_ATTACHED.to_string(), Attached { netting, ..record }.value())]);
    cloud.tag_instances(&[id.to_string()], &tag).await
}

/// Sends swap messages to the swapper's queue, delivered after `delay_seconds`; how many could
/// not be sent.
pub async fn send_swaps<C: Cloud>(
    cloud: &C,
    config: &Config,
    requests: &[SwapRequest],
    delay_seconds: i32,
) -> Result<usize, AwsError> {
    let messages =
        requests.iter().map(|r| Outgoing { body: to_body(r), delay_seconds, group_id: None, dedup_id: None }).collect();
    cloud.send(&config.swap_queue_url, messages).await
}

/// Sets MaxSize of `group` to `to` under `record`, written first (with `tags`, anything else to
/// write in the same call) so that a crash between the two leaves a change a scan can repair.
/// The record then follows what happened, so that it never claims a value that is not ours (an
/// operator may set that very value later, and it would be taken back): a change not made (the
/// service refused it, or, after no answer or a 5xx one, a fresh read shows it not made) takes
/// the record back to `previous` (none: the tag goes); a change made drops the value it
/// replaced. Those follow-ups are best effort: a failed one is logged and leaves the record as
/// it was.
pub async fn set_max_recorded<C: Cloud>(
    cloud: &C,
    group: &str,
    previous: Option<MaxRaise>,
    record: MaxRaise,
    to: i32,
    mut tags: Tags,
) -> Result<(), AwsError> {
    tags.insert(TAG_ORIGINAL_MAX.to_string(), record.value());
    cloud.tag_group(group, &tags).await?;
    let followed = match cloud.set_max_size(group, to).await {
        Ok(()) if record.before.is_none() => return Ok(()),
        Ok(()) => {
            let made = MaxRaise { before: None, ..record };
            cloud.tag_group(group, &Tags::from([(TAG_ORIGINAL_MAX.to_string(), made.value())])).await
        }
        Err(e) => {
            // No answer, or a 5xx one: the change may have been made; a fresh read says whether.
            let not_made = e.refused() || matches!(read_group(cloud, group).await, Ok(Some(g)) if g.max != to);
            if not_made {
                let taken_back = match previous {
                    Some(p) => cloud.tag_group(group, &Tags::from([(TAG_ORIGINAL_MAX.to_string(), p.value())])).await,
                    None => cloud.untag_group(group, &[TAG_ORIGINAL_MAX.to_string()]).await,
                };
                if let Err(t) = taken_back {
                    warn!(asg = %group, error = %t, "could not take back the record of a MaxSize change not made");
                }
            }
            return Err(e);
        }
    };
    if let Err(e) = followed {
        warn!(asg = %group, error = %e, "could not record that MaxSize is now {to}");
    }
    Ok(())
}

/// Whether a group read fresh is in dry-run (gone there since the caller planned, perhaps):
/// then what our swaps left in it stays as it is. An opted-in group goes by its own mode, any
/// other group by the configured default.
pub fn gone_dry(g: &Group, config: &Config) -> bool {
    let opted_in = g.opted_in(&config.opt_in_key, &config.opt_in_value);
    in_dry_run(opted_in, &GroupState::read(&g.tags, &config.policy), &config.policy)
}

/// Puts back the MaxSize a swap raised on `group` (read fresh by the caller, who has checked that
/// no swap of it is under way), and removes the tag that recorded it: see [`max_repair`].
/// `Ok(None)` when there is nothing to do; `Err` when a call failed (the scanner retries later).
/// The scanner's role may change MaxSize or the record only while the record is there: a call
/// refused (by IAM, or throttled), with the record gone on a fresh read, means another invocation
/// gave the same raise back first (both read it before either was done), or someone removed the
/// record; either way nothing is left to do. Nothing of ours removes it before a failed call.
pub async fn put_max_back<C: Cloud>(
    cloud: &C,
    group: &Group,
    state: &GroupState,
) -> Result<Option<MaxRepair>, AwsError> {
    match give_max_back(cloud, group, state).await {
        Err(e)
            if e.refused()
                && matches!(read_group(cloud, &group.name).await, Ok(Some(g)) if !g.tags.contains_key(TAG_ORIGINAL_MAX)) =>
        {
            info!(asg = %group.name, refused = %e, "the MaxSize record went meanwhile (another invocation gave the raise back first, or someone removed it): nothing left to do");
            Ok(None)
        }
        done => done,
    }
}

async fn give_max_back<C: Cloud>(cloud: &C, group: &Group, state: &GroupState) -> Result<Option<MaxRepair>, AwsError> {
    let repair = match max_repair(group, state) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(note) => {
            warn!("{note}");
            return Ok(None);
        }
    };
    // Recorded before the change, as a raise is, whether a part of the raise is left or all of
    // it is given back: should the record's removal below fail, it must not still claim the
    // value given back (an operator may set that very value later, and it would be taken back).
    // Someone else's value found: the record just goes.
    if let Some(max) = repair.set_max {
        let previous = state.original_max.clone().and_then(Result::ok);
        let record = repair.tag.unwrap_or_else(|| MaxRaise::next(previous, group.max, max));
        // (Boxed: this runs inside the swapper's and the scanner's own large futures.)
        Box::pin(set_max_recorded(cloud, &group.name, previous, record, max, Tags::new())).await?;
    }
    if let Some(max) = repair.set_max {
        info!(asg = %group.name, from = group.max, to = max, "gave back the MaxSize our swaps raised");
    } else if repair.tag.is_none() {
        info!(asg = %group.name, max = group.max, "MaxSize was set by someone else since our raise: theirs stands");
    }
    if repair.tag.is_none() {
        cloud.untag_group(&group.name, &[TAG_ORIGINAL_MAX.to_string()]).await?;
    }
    Ok(Some(repair))
}
