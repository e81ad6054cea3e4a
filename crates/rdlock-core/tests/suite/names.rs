//! Naming layout 2 over generated keys with `{`, `}`, `:`, `#` (and pieces of the marker) in
//! every position: distinct (key, role) pairs never share a name, no name is an accepted
//! key, every name starts with its key and hashes to its key's cluster slot, and the key and
//! role can be read back from the name.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use rdlock_core::{InvalidInput, LockKeys, MARKER, Role, slot};

/// Pieces keys are built from: the characters that matter to hash tags, to the marker and to
/// the separators, with a few ordinary ones and one that is not ASCII.
const PIECES: &[&str] = &["{", "}", ":", "#", "r", "d", "l", "#rd", "#rdl", "rdl", "{}", "a", "k", "0", "ü", " "];

fn key() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..10).prop_map(|p| p.concat())
}

/// Each key with look-alikes of it: tagged, half-tagged, extended by marker pieces.
fn family(k: &str) -> [String; 7] {
    [
        k.to_owned(),
        format!("{{{k}}}"),
        format!("{{{k}"),
        format!("{k}}}"),
        format!("{k}#"),
        format!("{k}#rd"),
        format!("x{{{k}}}y"),
    ]
}

/// Reads `(key, role)` back from a name by the layout's rule: the key ends at the first marker,
/// the role follows `:`, and a key without a hash tag is followed by `#` and 3 glue characters.
fn parse(name: &str) -> Option<(&str, &str)> {
    let at = name.find(MARKER)?;
    let (key, rest) = name.split_at(at);
    let rest = rest.strip_prefix(MARKER)?.strip_prefix(':')?;
    let role = if rdlock_core::hash_tag(key).is_some() { rest } else { rest.get(..rest.len().checked_sub(4)?)? };
    Some((key, role))
}

fn config() -> ProptestConfig {
    let cases = std::env::var("RDLOCK_PROPTEST_CASES").ok().map_or(2000, |n| n.parse().expect("a number of cases"));
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x6e61_6d65_7332),
        failure_persistence: crate::saved(),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn names_are_injective_in_slot_and_never_keys(keys in prop::collection::vec(key(), 1..6)) {
        let mut owner: BTreeMap<String, (String, Role)> = BTreeMap::new();
        let mut accepted: Vec<String> = Vec::new();
        for k in keys.iter().flat_map(|k| family(k)) {
            match LockKeys::new(&k) {
                Ok(names) => {
                    prop_assert!(!k.is_empty() && !k.contains(MARKER), "accepted {:?}", k);
                    prop_assert_eq!(&names.lock, &k);
                    prop_assert_eq!(names.channel, LockKeys::name(&k, Role::Channel).expect("valid"));
                    accepted.push(k);
                }
                Err(InvalidInput::EmptyKey) => prop_assert!(k.is_empty()),
                Err(InvalidInput::KeyReserved(r)) => prop_assert!(r == k && k.contains(MARKER), "refused {:?}", k),
                Err(e) => prop_assert!(false, "{:?}: unexpected {}", k, e),
            }
        }
        for k in &accepted {
            for role in Role::ALL {
                let name = LockKeys::name(k, role).expect("an accepted key");
                prop_assert!(name.starts_with(k.as_str()), "{:?} does not start with {:?}", name, k);
                prop_assert_eq!(slot(&name), slot(k), "{:?} vs {:?}", name, k);
                prop_assert_eq!(parse(&name), Some((k.as_str(), role.as_str())), "{:?}", name);
                prop_assert!(LockKeys::is_auxiliary(&name));
                prop_assert!(
                    matches!(LockKeys::new(&name), Err(InvalidInput::KeyReserved(_))),
                    "the name {:?} is accepted as a key", name
                );
                if let Some(prev) = owner.insert(name.clone(), (k.clone(), role)) {
                    prop_assert_eq!(&prev, &(k.clone(), role), "{:?} and {:?} share {:?}", prev, (k, role), name);
                }
            }
        }
        for k in &accepted {
            prop_assert!(!owner.contains_key(k), "the key {:?} is another key's auxiliary name", k);
        }
    }
}
