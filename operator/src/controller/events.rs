//! Events on the objects the controllers reconcile: one per change, so `kubectl describe` tells
//! what the operator did and why.
//!
//! The Recorder folds Events with the same regarding object, reason, action and related object
//! into one series, so each change names its object as `related` and each condition its type as
//! `action`; otherwise later changes would only bump the count of the first.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

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

/// A reference to an object the operator owns.
pub(super) fn owned_ref(kind: Kind, namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(kind.api_version().to_owned()),
        kind: Some(kind.name().to_owned()),
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..ObjectReference::default()
    }
}

/// Publishes `events` on `regarding` in the background, in order: Events are a report, so the
/// pass neither waits for them nor fails when they cannot be written.
pub(super) fn publish(recorder: &Recorder, regarding: ObjectReference, events: Vec<Event>) {
    if events.is_empty() {
        return;
    }
    let recorder = recorder.clone();
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
    use super::*;

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let note = "é".repeat(MAX_NOTE);
        let event = event(EventType::Normal, "R", "A", note, None);
        let note = event.note.expect("note");
        assert!(note.len() <= MAX_NOTE && note.ends_with("..."), "{}", note.len());
    }
}
