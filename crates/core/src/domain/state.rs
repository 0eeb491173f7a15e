//! What a group's tags say, read once: its policy (defaults overridden by its own tags), its
//! backed-off Spot pools, a paused rollout, the MaxSize a swap raised, and a note for every tag
//! that could not be read. Every workflow reads a group's tags through [`GroupState::read`] and
//! nowhere else.

use std::collections::BTreeMap;

use crate::domain::drift::{RolloutPause, TAG_ROLLOUT_PAUSED};
use crate::domain::model::{Epoch, Group, MaxRaise, Tags, TemplateVersion, TAG_ORIGINAL_MAX, TAG_SWAP_UNDER_WAY};
use crate::domain::policy::Policy;
use crate::domain::pools::Backoffs;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupState {
    pub policy: Policy,
    pub backoffs: Backoffs,
    pub rollout_pause: Option<RolloutPause>,
    /// What our swaps did to MaxSize: `Err(raw)` when the tag cannot be read (then it is left
    /// alone, with a note).
    pub original_max: Option<Result<MaxRaise, String>>,
    /// [`TAG_SWAP_UNDER_WAY`] is on the group.
    pub swap_marked: bool,
    /// One per tag of ours that could not be read; the default applies in its place.
    pub notes: Vec<String>,
}

impl GroupState {
    pub fn read(tags: &Tags, defaults: &Policy) -> GroupState {
        let (policy, mut notes) = defaults.for_group(tags);
        let (backoffs, backoff_notes) = Backoffs::from_tags(tags);
        notes.extend(backoff_notes);
        let original_max = tags.get(TAG_ORIGINAL_MAX).map(|raw| {
            MaxRaise::parse(raw).ok_or_else(|| {
                notes.push(format!("tag {TAG_ORIGINAL_MAX}={raw:?} is not <from>:<to>; MaxSize left alone"));
                raw.clone()
            })
        });
        GroupState {
            policy,
            backoffs,
            rollout_pause: tags.get(TAG_ROLLOUT_PAUSED).map(|raw| RolloutPause::parse(raw)),
            original_max,
            swap_marked: tags.contains_key(TAG_SWAP_UNDER_WAY),
            notes,
        }
    }

    /// The state of each of `groups`, by name.
    pub fn read_all<'a>(
        groups: impl IntoIterator<Item = &'a Group>,
        defaults: &Policy,
    ) -> BTreeMap<String, GroupState> {
        groups.into_iter().map(|g| (g.name.clone(), GroupState::read(&g.tags, defaults))).collect()
    }

    /// Since when the rollout of `current` is paused in this group, if it is.
    pub fn paused_since(&self, current: &TemplateVersion) -> Option<Epoch> {
        self.rollout_pause.as_ref().and_then(|p| p.since(current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::drift::{pause_value, Cause};
    use crate::domain::policy::{Mode, TAG_MODE};
    use crate::domain::pools::TAG_BACKOFF_PREFIX;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_tag_of_ours_is_read_once_and_bad_ones_become_notes() {
        let current = TemplateVersion { template_id: "lt-1".into(), number: 2, ..Default::default() };
        let backoff = format!("{TAG_BACKOFF_PREFIX}eu-west-1a");
        let s = GroupState::read(
            &tags(&[
                (TAG_MODE, "dry-run"),
                (&backoff, "m5.large=100 junk"),
                (TAG_ROLLOUT_PAUSED, &pause_value(&current, 50, Cause::Checks)),
                (TAG_ORIGINAL_MAX, "4"),
            ]),
            &Policy::default(),
        );
        assert_eq!(s.policy.mode, Mode::DryRun);
        assert_eq!(s.backoffs.until("eu-west-1a", "m5.large", 10), Some(100));
        assert_eq!(s.paused_since(&current), Some(50));
        assert_eq!(s.original_max, Some(Ok(MaxRaise { from: 4, to: None, before: None })));
        assert_eq!(s.notes.len(), 1, "{:?}", s.notes);

        let s = GroupState::read(&tags(&[(TAG_ORIGINAL_MAX, "four"), (TAG_MODE, "sometimes")]), &Policy::default());
        assert_eq!(s.original_max, Some(Err("four".into())));
        assert_eq!(s.notes.len(), 2, "{:?}", s.notes);
        assert_eq!(GroupState::read(&Tags::new(), &Policy::default()), GroupState::default());
    }
}
