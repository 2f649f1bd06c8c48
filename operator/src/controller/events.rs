//! Events on the objects the controllers reconcile: what a person reading `kubectl describe`
//! needs, and no more. A pass that wrote objects publishes one Event naming all of them; a pass
//! that changed the status publishes one Event for the conditions worth a reader's attention.
//! At a thousand Distributions, one Event per object and per condition was half of the
//! operator's writes.
//!
//! Each publication gets a fresh [`Recorder`]: its series cache would otherwise hold every Event
//! of the last minutes (memory growing with the number of Distributions), and would fold a later
//! Event with the same reason into the first one's series, keeping the first one's note.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::api::reasons;
use crate::render::Kind;

/// The Events API limit on a note.
const MAX_NOTE: usize = 1024;

/// An Event; `note` is cut to the API's limit.
pub(super) fn event(
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
    related: Option<ObjectReference>,
) -> Event {
    let mut note = note;
    if note.len() > MAX_NOTE {
        let mut cut = MAX_NOTE - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: related,
    }
}

/// What a pass did to one owned object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verb {
    Created,
    Updated,
    Deleted,
}

impl Verb {
    pub(super) fn word(self) -> &'static str {
        match self {
            Verb::Created => "created",
            Verb::Updated => "updated",
            Verb::Deleted => "deleted",
        }
    }
}

/// One Event for every object a pass wrote, grouped by what was done: `created 15 objects:
/// ServiceAccount a, ...; updated ConfigMap b`. The reason is the first verb that applies of
/// Updated (drift or a spec change), Deleted, Created, so a correction is never hidden under a
/// creation. `None` when nothing was written.
pub(super) fn changes(written: &[(Verb, Kind, String)]) -> Option<Event> {
    let mut parts = Vec::new();
    for verb in [Verb::Created, Verb::Updated, Verb::Deleted] {
        let objects: Vec<String> = written
            .iter()
            .filter(|(v, _, _)| *v == verb)
            .map(|(_, kind, name)| format!("{} {name}", kind.name()))
            .collect();
        match objects.len() {
            0 => {}
            1 => parts.push(format!("{} {}", verb.word(), objects[0])),
            n => parts.push(format!("{} {n} objects: {}", verb.word(), objects.join(", "))),
        }
    }
    let has = |verb: Verb| written.iter().any(|(v, _, _)| *v == verb);
    let (reason, action) = if has(Verb::Updated) {
        ("Updated", "Apply")
    } else if has(Verb::Deleted) {
        ("Deleted", "Delete")
    } else if has(Verb::Created) {
        ("Created", "Apply")
    } else {
        return None;
    };
    Some(event(EventType::Normal, reason, action, parts.join("; "), None))
}

/// One Event for the conditions that changed in a way a reader needs to know, `None` if none
/// did. Progressing is left out (Ready says the same thing about a rollout), and so is the first
/// status of a new Distribution while it rolls out and nothing is wrong (the `Created` Event
/// already says so). Warning when Degraded is True.
pub(super) fn condition_changes(before: &[Condition], after: &[Condition]) -> Option<Event> {
    let reported: Vec<&Condition> = after
        .iter()
        .filter(|c| c.type_ != "Progressing")
        .filter(|c| {
            match before.iter().find(|b| b.type_ == c.type_) {
                Some(b) => b.status != c.status || b.reason != c.reason,
                // New: only worth an Event when it says something a reader must act on or wait
                // for beyond the rollout the creation started.
                None => !matches!(
                    (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
                    ("Degraded", "False", _) | ("Ready", "False", reasons::ROLLOUT_IN_PROGRESS)
                ),
            }
        })
        .collect();
    let degraded = reported
        .iter()
        .find(|c| c.type_ == "Degraded" && c.status == "True");
    let headline = degraded.or_else(|| reported.first())?;
    let type_ = if degraded.is_some() {
        EventType::Warning
    } else {
        EventType::Normal
    };
    let note = reported
        .iter()
        .map(|c| format!("{} is {} ({}): {}", c.type_, c.status, c.reason, c.message))
        .collect::<Vec<_>>()
        .join(" ");
    Some(event(type_, &headline.reason, &headline.type_, note, None))
}

/// Publishes `events` on `regarding` in the background, in order: Events are a report, so the
/// pass neither waits for them nor fails when they cannot be written.
pub(super) fn publish(client: &Client, reporter: &Reporter, regarding: ObjectReference, events: Vec<Event>) {
    if events.is_empty() {
        return;
    }
    let recorder = Recorder::new(client.clone(), reporter.clone());
    tokio::spawn(async move {
        for event in events {
            if let Err(error) = recorder.publish(&event, &regarding).await {
                tracing::warn!(
                    object = ?regarding.name,
                    reason = %event.reason,
                    %error,
                    "could not publish an Event"
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let note = "é".repeat(MAX_NOTE);
        let event = event(EventType::Normal, "R", "A", note, None);
        let note = event.note.expect("note");
        assert!(note.len() <= MAX_NOTE && note.ends_with("..."), "{}", note.len());
    }

    #[test]
    fn one_event_names_every_written_object_and_an_update_leads() {
        assert!(changes(&[]).is_none());
        let created = changes(&[
            (Verb::Created, Kind::ServiceAccount, "site-edge".into()),
            (Verb::Created, Kind::Deployment, "site-eu".into()),
        ])
        .expect("event");
        assert_eq!(
            (created.reason.as_str(), created.action.as_str()),
            ("Created", "Apply")
        );
        assert_eq!(
            created.note.as_deref(),
            Some("created 2 objects: ServiceAccount site-edge, Deployment site-eu")
        );
        let mixed = changes(&[
            (Verb::Deleted, Kind::Service, "site-us".into()),
            (Verb::Updated, Kind::ConfigMap, "site-edge".into()),
        ])
        .expect("event");
        assert_eq!(mixed.reason, "Updated");
        assert_eq!(
            mixed.note.as_deref(),
            Some("updated ConfigMap site-edge; deleted Service site-us")
        );
    }

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: format!("{reason}."),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn a_new_rollout_is_not_reported_but_becoming_ready_is() {
        let rolling = [
            condition("Ready", "False", "RolloutInProgress"),
            condition("Progressing", "True", "RolloutInProgress"),
            condition("Degraded", "False", "AsExpected"),
        ];
        assert!(condition_changes(&[], &rolling).is_none());
        assert!(condition_changes(&rolling, &rolling).is_none());
        let ready = [
            condition("Ready", "True", "AllRegionsReady"),
            condition("Progressing", "False", "RolloutComplete"),
            condition("Degraded", "False", "AsExpected"),
        ];
        let event = condition_changes(&rolling, &ready).expect("event");
        assert_eq!(event.type_, EventType::Normal);
        assert_eq!(
            (event.reason.as_str(), event.action.as_str()),
            ("AllRegionsReady", "Ready")
        );
        assert_eq!(
            event.note.as_deref(),
            Some("Ready is True (AllRegionsReady): AllRegionsReady.")
        );
    }

    #[test]
    fn degraded_is_a_warning_from_the_first_status_on() {
        let blocked = [
            condition("Ready", "False", "NoNodesInRegion"),
            condition("Progressing", "True", "RolloutInProgress"),
            condition("Degraded", "True", "NoNodesInRegion"),
        ];
        let event = condition_changes(&[], &blocked).expect("event");
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(
            (event.reason.as_str(), event.action.as_str()),
            ("NoNodesInRegion", "Degraded")
        );
        assert!(
            event
                .note
                .expect("note")
                .starts_with("Ready is False (NoNodesInRegion)")
        );
    }
}
