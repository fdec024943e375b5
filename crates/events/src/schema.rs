//! Versioned event schemas: what every `(name, version)` looks like, the publisher's example
//! payload, and how an old version is upcast, one step at a time, to the next.
//!
//! A published version is never edited. A breaking change adds version N+1 (a new type) and
//! turns version N into a [`Upcast`] whose `upcast` builds the N+1 value from an N value —
//! a pure function of the old payload, so stored events (in the outbox, in dead letters being
//! replayed) can be brought to the version a listener consumes without asking anybody.
//!
//! [`Catalog`] is the list every check reads: the runtime upcasts with it, `cargo xtask
//! check-contracts` snapshots its schemas, the golden corpus is decoded against it, and
//! `cargo xtask docs` renders it.

use std::borrow::Cow;
use std::fmt;

use schemars::JsonSchema;
use serde_json::Value;

use crate::envelope::{Event, EventEnvelope, EventKey};

/// An event type in the catalog: it has a JSON Schema and an example payload.
pub trait CatalogEvent: Event + JsonSchema {
    /// The publisher's example: every consumer is tested against it, and it seeds the golden
    /// corpus. Deterministic (fixed ids and instants), so generated docs do not churn.
    fn example() -> Self;
}

/// An old version of an event and how it becomes the next one.
pub trait Upcast: CatalogEvent {
    /// Version N+1 of the same event.
    type Next: CatalogEvent;

    /// Builds the next version from this one; pure, total, no I/O.
    fn upcast(self) -> Self::Next;
}

/// One `(name, version)` of the catalog, with everything the checks and the runtime need.
#[derive(Clone, Copy)]
pub struct EventSchema {
    /// The event name and version.
    pub key: EventKey,
    /// `Some(reason)` when the type deliberately carries state (event-carried state
    /// transfer); the payload-discipline lint then lets its fields through.
    pub state_transfer: Option<&'static str>,
    schema: fn() -> Value,
    example: fn() -> Value,
    decode: fn(&Value) -> Result<(), String>,
    upcast: Option<fn(Value) -> Result<Value, String>>,
}

impl fmt::Debug for EventSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSchema")
            .field("key", &self.key)
            .field("state_transfer", &self.state_transfer)
            .field("upcasts_to", &self.upcasts_to())
            .finish_non_exhaustive()
    }
}

fn schema_of<E: CatalogEvent>() -> Value {
    schemars::schema_for!(E).to_value()
}

fn example_of<E: CatalogEvent>() -> Value {
    // An example that does not serialize is a bug in the catalog, found by its tests.
    serde_json::to_value(E::example()).unwrap_or(Value::Null)
}

fn decode_as<E: CatalogEvent>(payload: &Value) -> Result<(), String> {
    E::deserialize(payload).map(drop).map_err(|e| {
        format!(
            "payload of {}.v{} does not decode: {e}",
            E::NAME,
            E::VERSION
        )
    })
}

fn upcast_as<E: Upcast>(payload: Value) -> Result<Value, String> {
    let old = E::deserialize(&payload).map_err(|e| {
        format!(
            "payload of {}.v{} does not decode: {e}",
            E::NAME,
            E::VERSION
        )
    })?;
    serde_json::to_value(old.upcast()).map_err(|e| {
        format!(
            "{}.v{} does not serialize: {e}",
            E::Next::NAME,
            E::Next::VERSION
        )
    })
}

const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl EventSchema {
    /// The entry of the version publishers emit today.
    pub fn current<E: CatalogEvent>() -> Self {
        Self {
            key: E::key(),
            state_transfer: E::STATE_TRANSFER,
            schema: schema_of::<E>,
            example: example_of::<E>,
            decode: decode_as::<E>,
            upcast: None,
        }
    }

    /// The entry of an older version, which upcasts to `E::Next`.
    pub fn superseded<E: Upcast>() -> Self {
        const {
            assert!(
                same_str(E::NAME, <E::Next as Event>::NAME),
                "an upcaster must keep the event's name"
            );
            assert!(
                <E::Next as Event>::VERSION == E::VERSION + 1,
                "an upcaster goes from version N to N+1"
            );
        }
        Self {
            upcast: Some(upcast_as::<E>),
            ..Self::current::<E>()
        }
    }

    /// Its JSON Schema (draft 2020-12), as committed under `crates/events/schemas/`.
    pub fn schema(&self) -> Value {
        (self.schema)()
    }

    /// The publisher's example payload at this version.
    pub fn example(&self) -> Value {
        (self.example)()
    }

    /// Checks that `payload` decodes as this version's Rust type.
    ///
    /// # Errors
    /// serde's reason, prefixed with `name.vN`.
    pub fn decode(&self, payload: &Value) -> Result<(), String> {
        (self.decode)(payload)
    }

    /// The version this one upcasts to; `None` for the current version.
    pub fn upcasts_to(&self) -> Option<u32> {
        self.upcast.map(|_| self.key.version + 1)
    }
}

/// Why a stored event could not be brought to the version a listener consumes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    /// The listener consumes no version of the event reachable from the stored one.
    #[error("does not consume {name}.v{version}")]
    NotConsumed {
        /// The stored event's name.
        name: String,
        /// The stored event's version.
        version: u32,
    },
    /// The catalog has no upcaster out of this version.
    #[error("{name}.v{version} has no upcaster to v{}", version + 1)]
    NoUpcaster {
        /// The event name.
        name: String,
        /// The version that cannot be upcast.
        version: u32,
    },
    /// An upcaster refused the payload (it does not decode as the old version).
    #[error("upcasting {name}.v{version} failed: {reason}")]
    Failed {
        /// The event name.
        name: String,
        /// The version being upcast.
        version: u32,
        /// Why.
        reason: String,
    },
}

/// Every version of every event, in `(name, version)` order.
#[derive(Debug, Clone)]
pub struct Catalog {
    entries: Vec<EventSchema>,
}

impl Catalog {
    /// A catalog of these entries (sorted by name, then version).
    pub fn new(mut entries: Vec<EventSchema>) -> Self {
        entries.sort_by_key(|e| e.key);
        Self { entries }
    }

    /// Every entry, by name then version.
    pub fn entries(&self) -> &[EventSchema] {
        &self.entries
    }

    /// The entry of one `(name, version)`.
    pub fn get(&self, name: &str, version: u32) -> Option<&EventSchema> {
        self.entries
            .iter()
            .find(|e| e.key.name == name && e.key.version == version)
    }

    /// The newest version of `name`.
    pub fn latest(&self, name: &str) -> Option<u32> {
        self.entries
            .iter()
            .filter(|e| e.key.name == name)
            .map(|e| e.key.version)
            .max()
    }

    /// Upcasts `envelope` step by step (vN → vN+1 → …) to `version`; the id, correlation
    /// and timestamps stay as stored.
    ///
    /// # Errors
    /// [`UpcastError::NotConsumed`] when `version` is older than the stored one (there is no
    /// downcasting); [`UpcastError::NoUpcaster`] or [`UpcastError::Failed`] on the way.
    pub fn upcast(
        &self,
        envelope: &EventEnvelope,
        version: u32,
    ) -> Result<EventEnvelope, UpcastError> {
        if version < envelope.version {
            return Err(UpcastError::NotConsumed {
                name: envelope.name.clone(),
                version: envelope.version,
            });
        }
        let mut out = envelope.clone();
        while out.version < version {
            let step = self
                .get(&out.name, out.version)
                .and_then(|e| e.upcast)
                .ok_or_else(|| UpcastError::NoUpcaster {
                    name: out.name.clone(),
                    version: out.version,
                })?;
            out.payload = step(out.payload).map_err(|reason| UpcastError::Failed {
                name: out.name.clone(),
                version: out.version,
                reason,
            })?;
            out.version += 1;
        }
        Ok(out)
    }

    /// The envelope a listener consuming `consumes` should see: the stored one when it
    /// consumes that version, else the stored one upcast to the lowest newer version of the
    /// same event it consumes.
    ///
    /// # Errors
    /// [`UpcastError::NotConsumed`] when it consumes no version at or after the stored one;
    /// otherwise as [`Catalog::upcast`].
    pub fn for_listener<'e>(
        &self,
        envelope: &'e EventEnvelope,
        consumes: &[EventKey],
    ) -> Result<Cow<'e, EventEnvelope>, UpcastError> {
        let target = consumes
            .iter()
            .filter(|k| k.name == envelope.name && k.version >= envelope.version)
            .map(|k| k.version)
            .min();
        match target {
            Some(v) if v == envelope.version => Ok(Cow::Borrowed(envelope)),
            Some(v) => self.upcast(envelope, v).map(Cow::Owned),
            None => Err(UpcastError::NotConsumed {
                name: envelope.name.clone(),
                version: envelope.version,
            }),
        }
    }

    /// The example envelope of `name.vN`, built from the publisher's example of each
    /// version at or before N and upcast to N — what every consumer is tested against.
    ///
    /// # Errors
    /// As [`Catalog::upcast`].
    pub fn examples_for(&self, key: EventKey) -> Result<Vec<EventEnvelope>, UpcastError> {
        self.entries
            .iter()
            .filter(|e| e.key.name == key.name && e.key.version <= key.version)
            .map(|e| self.upcast(&example_envelope(e), key.version))
            .collect()
    }

    /// Internal consistency: versions run 1..=latest without gaps, every version but the
    /// latest upcasts, the latest does not, no entry appears twice. Empty when sound.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, entry) in self.entries.iter().enumerate() {
            let key = entry.key;
            let previous = i.checked_sub(1).map(|p| self.entries[p].key);
            let expected = match previous {
                Some(p) if p.name == key.name => p.version + 1,
                _ => 1,
            };
            if key.version != expected {
                problems.push(format!(
                    "{}.v{}: expected v{expected} next (versions run 1, 2, 3 … without gaps or repeats)",
                    key.name, key.version
                ));
            }
            let latest = self.latest(key.name) == Some(key.version);
            match (latest, entry.upcasts_to()) {
                (true, Some(_)) => problems.push(format!(
                    "{}.v{}: the latest version must be `EventSchema::current`, not superseded",
                    key.name, key.version
                )),
                (false, None) => problems.push(format!(
                    "{}.v{}: an older version needs an upcaster to v{} (`EventSchema::superseded`)",
                    key.name,
                    key.version,
                    key.version + 1
                )),
                _ => {}
            }
        }
        problems
    }
}

/// A stored-looking envelope around an entry's example payload, with fixed metadata.
pub fn example_envelope(entry: &EventSchema) -> EventEnvelope {
    EventEnvelope {
        id: uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
        name: entry.key.name.to_owned(),
        version: entry.key.version,
        occurred_at: chrono::DateTime::UNIX_EPOCH + chrono::TimeDelta::days(20_000),
        correlation_id: crate::context::CorrelationId::parse("example-correlation")
            .unwrap_or_default(),
        causation_id: None,
        payload: entry.example(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! A fixture catalog with three versions of one event: v1 → v2 renames a field, v2 → v3
    //! adds one with a default.

    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct ThingV1 {
        thing: Uuid,
    }
    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct ThingV2 {
        thing_id: Uuid,
    }
    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct ThingV3 {
        thing_id: Uuid,
        priority: u8,
    }

    impl Event for ThingV1 {
        const NAME: &'static str = "thing.happened";
        const VERSION: u32 = 1;
    }
    impl Event for ThingV2 {
        const NAME: &'static str = "thing.happened";
        const VERSION: u32 = 2;
    }
    impl Event for ThingV3 {
        const NAME: &'static str = "thing.happened";
        const VERSION: u32 = 3;
    }
    impl CatalogEvent for ThingV1 {
        fn example() -> Self {
            Self {
                thing: Uuid::from_u128(1),
            }
        }
    }
    impl CatalogEvent for ThingV2 {
        fn example() -> Self {
            Self {
                thing_id: Uuid::from_u128(2),
            }
        }
    }
    impl CatalogEvent for ThingV3 {
        fn example() -> Self {
            Self {
                thing_id: Uuid::from_u128(3),
                priority: 5,
            }
        }
    }
    impl Upcast for ThingV1 {
        type Next = ThingV2;
        fn upcast(self) -> ThingV2 {
            ThingV2 {
                thing_id: self.thing,
            }
        }
    }
    impl Upcast for ThingV2 {
        type Next = ThingV3;
        fn upcast(self) -> ThingV3 {
            ThingV3 {
                thing_id: self.thing_id,
                priority: 0,
            }
        }
    }

    fn catalog() -> Catalog {
        Catalog::new(vec![
            EventSchema::current::<ThingV3>(),
            EventSchema::superseded::<ThingV1>(),
            EventSchema::superseded::<ThingV2>(),
        ])
    }

    fn stored_v1() -> EventEnvelope {
        example_envelope(catalog().get("thing.happened", 1).unwrap())
    }

    #[test]
    fn a_stored_v1_event_is_upcast_step_by_step_to_v3() {
        let v3 = catalog().upcast(&stored_v1(), 3).unwrap();
        assert_eq!(v3.version, 3);
        assert_eq!(
            v3.payload,
            json!({"thing_id": Uuid::from_u128(1), "priority": 0})
        );
        assert_eq!(v3.id, stored_v1().id, "the id survives upcasting");
    }

    #[test]
    fn a_listener_gets_the_lowest_version_it_consumes_at_or_after_the_stored_one() {
        let key = |version| EventKey {
            name: "thing.happened",
            version,
        };
        let c = catalog();
        let stored = stored_v1();
        assert!(matches!(
            c.for_listener(&stored, &[key(1)]).unwrap(),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            c.for_listener(&stored, &[key(3), key(2)]).unwrap().version,
            2
        );
        let v3 = c.upcast(&stored, 3).unwrap();
        let err = c.for_listener(&v3, &[key(2)]).unwrap_err();
        assert_eq!(err.to_string(), "does not consume thing.happened.v3");
    }

    #[test]
    fn a_payload_the_old_version_refuses_fails_with_the_reason() {
        let mut stored = stored_v1();
        stored.payload = json!({"thing": "not-a-uuid"});
        let err = catalog().upcast(&stored, 2).unwrap_err();
        assert!(
            matches!(&err, UpcastError::Failed { version: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn consumers_get_every_older_example_upcast_to_their_version() {
        let c = catalog();
        let examples = c
            .examples_for(EventKey {
                name: "thing.happened",
                version: 3,
            })
            .unwrap();
        let payloads: Vec<_> = examples.iter().map(|e| e.payload.clone()).collect();
        assert_eq!(
            payloads,
            vec![
                json!({"thing_id": Uuid::from_u128(1), "priority": 0}),
                json!({"thing_id": Uuid::from_u128(2), "priority": 0}),
                json!({"thing_id": Uuid::from_u128(3), "priority": 5}),
            ]
        );
    }

    #[test]
    fn gaps_and_missing_upcasters_are_problems() {
        assert!(catalog().problems().is_empty());
        let gap = Catalog::new(vec![
            EventSchema::superseded::<ThingV1>(),
            EventSchema::current::<ThingV3>(),
        ]);
        assert_eq!(
            gap.problems(),
            vec![
                "thing.happened.v3: expected v2 next (versions run 1, 2, 3 … without gaps or repeats)"
            ]
        );
        let dangling = Catalog::new(vec![
            EventSchema::current::<ThingV1>(),
            EventSchema::current::<ThingV2>(),
        ]);
        assert_eq!(
            dangling.problems(),
            vec![
                "thing.happened.v1: an older version needs an upcaster to v2 (`EventSchema::superseded`)"
            ]
        );
    }
}
