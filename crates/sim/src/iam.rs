//! What each function's role may change, as `template.yaml` grants it: the simulated account
//! refuses a call the deployed role would be refused (moto evaluates no IAM condition). Describe
//! calls and sending to the queues are always allowed.

use asg_core::domain::drift::TAG_ROLLOUT_PAUSED;
use asg_core::domain::model::{
    TAG_ATTACHED, TAG_HOLD, TAG_ORIGINAL_MAX, TAG_REBALANCE, TAG_REPLACES, TAG_SWAP_UNDER_WAY,
};
use asg_core::domain::pools::TAG_BACKOFF_PREFIX;

use crate::check::Call;
use crate::world::{World, GROUP_NAME_TAG};

/// The four functions, by the name each one's handler logs as, and the command line's read-only
/// role (any read, no change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Scanner,
    SpotCreator,
    Swapper,
    Interruption,
    ReadOnly,
}

fn keys_within<'a>(keys: impl IntoIterator<Item = &'a String>, allowed: &[&str]) -> bool {
    keys.into_iter().all(|k| {
        allowed.iter().any(|a| match a.strip_suffix('*') {
            Some(prefix) => k.starts_with(prefix),
            None => k == a,
        })
    })
}

impl Role {
    /// The function's name, as its metrics and logs call it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Scanner => "scanner",
            Role::SpotCreator => "spot-creator",
            Role::Swapper => "swapper",
            Role::Interruption => "interruption",
            Role::ReadOnly => "asg-optimizer",
        }
    }
}

/// Why `role` may not make `call` now, if it may not. With `as_if_opted_in`, every group is
/// taken to carry the opt-in tag: a call refused only without it was raced by an operator opting
/// the group out, not made by mistake.
pub fn refuses(role: Role, call: &Call, world: &World, opt_in: (&str, &str), as_if_opted_in: bool) -> Option<String> {
    let group_has = |g: &str, key: &str, value: Option<&str>| {
        world.groups.get(g).is_some_and(|g| g.tags.get(key).is_some_and(|v| value.is_none_or(|want| v == want)))
    };
    let opted_in = |g: &str| as_if_opted_in || group_has(g, opt_in.0, Some(opt_in.1));
    // Where a swap of ours may be attached, the swapper and the interruption handler may finish
    // or undo it whatever the opt-in tag says.
    let marked = |g: &str| group_has(g, TAG_SWAP_UNDER_WAY, None);
    let instance_has = |id: &str, key: &str| world.instances.get(id).is_some_and(|i| i.tags.contains_key(key));
    let group_of = |id: &str| {
        let group = world.instances.get(id)?.tags.get(GROUP_NAME_TAG)?;
        world.groups.get(group).filter(|g| g.member(id).is_some()).map(|g| g.name.clone())
    };
    let ok = match (role, call) {
        (_, Call::Send(..)) => true,
        (Role::SpotCreator, Call::Launch(_)) => true,
        (_, Call::Terminate(ids)) => ids.iter().all(|id| instance_has(id, TAG_REPLACES)),
        // The record of an attach, on a copy of ours before it is attached; the scanner marks
        // one never made over, on an orphan it is about to terminate.
        (Role::Swapper | Role::Interruption | Role::Scanner, Call::TagInstances(ids, tags))
            if keys_within(tags.keys(), &[TAG_ATTACHED]) =>
        {
            ids.iter().all(|id| instance_has(id, TAG_REPLACES))
        }
        // A rebalance recommendation for a copy whose swap is not over.
        (Role::Interruption, Call::TagInstances(ids, tags)) if keys_within(tags.keys(), &[TAG_REBALANCE]) => {
            ids.iter().all(|id| instance_has(id, TAG_REPLACES))
        }
        (_, Call::TagInstances(ids, tags)) => {
            keys_within(tags.keys(), &[TAG_HOLD]) && ids.iter().all(|id| instance_has(id, GROUP_NAME_TAG))
        }
        (Role::SpotCreator | Role::Interruption, Call::TagGroup(g, tags)) => {
            opted_in(g) && keys_within(tags.keys(), &[&format!("{TAG_BACKOFF_PREFIX}*")])
        }
        (Role::Scanner, Call::SetMax(g, _)) => group_has(g, TAG_ORIGINAL_MAX, None),
        // A partial give-back rewrites the record of what is still raised.
        (Role::Scanner, Call::TagGroup(g, tags)) => {
            group_has(g, TAG_ORIGINAL_MAX, None) && keys_within(tags.keys(), &[TAG_ORIGINAL_MAX])
        }
        (Role::Scanner, Call::UntagGroup(g, keys)) => {
            (group_has(g, TAG_ORIGINAL_MAX, None) && keys_within(keys.iter(), &[TAG_ORIGINAL_MAX]))
                || keys_within(
                    keys.iter(),
                    &[&format!("{TAG_BACKOFF_PREFIX}*"), TAG_ROLLOUT_PAUSED, TAG_SWAP_UNDER_WAY],
                )
        }
        (Role::Swapper, Call::Attach(g, _)) => opted_in(g),
        (Role::Swapper, Call::SetMax(g, _) | Call::SetDesired(g, _)) => opted_in(g) || marked(g),
        // An instance in no group: Auto Scaling answers ValidationError before IAM matters.
        (Role::Swapper, Call::TerminateInGroup(id, _)) => group_of(id).is_none_or(|g| opted_in(&g) || marked(&g)),
        (Role::Swapper, Call::TagGroup(g, tags)) => {
            (opted_in(g) && swapper_keys(tags.keys())) || (marked(g) && keys_within(tags.keys(), &[TAG_ORIGINAL_MAX]))
        }
        (Role::Swapper, Call::UntagGroup(g, keys)) => {
            (opted_in(g) && swapper_keys(keys.iter())) || (marked(g) && keys_within(keys.iter(), &[TAG_ORIGINAL_MAX]))
        }
        (Role::Interruption, Call::Detach(g, _, _)) => opted_in(g),
        (Role::Interruption, Call::TerminateInGroup(id, _)) => group_of(id).is_none_or(|g| opted_in(&g) || marked(&g)),
        _ => false,
    };
    (!ok).then(|| format!("{role:?} may not {call:?}"))
}

fn swapper_keys<'a>(keys: impl IntoIterator<Item = &'a String>) -> bool {
    keys_within(keys, &[TAG_ORIGINAL_MAX, TAG_ROLLOUT_PAUSED, TAG_SWAP_UNDER_WAY])
}
