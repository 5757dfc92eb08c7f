//! Hostile input: mutated policies never panic the parser, and every
//! error it reports is located inside the file. `DRP_FUZZ_CASES` raises
//! the number of cases for long runs.

use proptest::prelude::*;

use super::Policy;

const SEED: &str = include_str!("../../../policies/db-server.yaml");

fn cases() -> u32 {
    std::env::var("DRP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    Replace(usize, String),
    SwapLines(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..12).prop_map(|(a, n)| Edit::Delete(a, n)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                ":",
                " ",
                "\n",
                "-",
                "{",
                "}",
                "[",
                "]",
                "'",
                "\"",
                "&a",
                "*a",
                "!!x",
                "#",
                "\t",
                "kep_last: 3",
                "ü",
                "\u{0}",
                "~",
                "5 minutes",
                "${X}"
            ])
        )
            .prop_map(|(a, s)| Edit::Insert(a, s.to_string())),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut t: Vec<char> = text.chars().collect();
    for e in edits {
        match e {
            Edit::Delete(at, n) if !t.is_empty() => {
                let at = at % t.len();
                let end = (at + n).min(t.len());
                t.drain(at..end);
            }
            Edit::Insert(at, s) => {
                let at = at % (t.len() + 1);
                for (i, c) in s.chars().enumerate() {
                    t.insert(at + i, c);
                }
            }
            Edit::Replace(at, s) if !t.is_empty() => {
                let at = at % t.len();
                t.splice(at..at + 1, s.chars());
            }
            Edit::SwapLines(a, b) => {
                let s: String = t.iter().collect();
                let mut lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let (a, b) = (a % lines.len(), b % lines.len());
                    lines.swap(a, b);
                }
                t = lines.join("\n").chars().collect();
            }
            _ => {}
        }
    }
    t.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]
    #[test]
    fn mutated_policies_never_panic_and_errors_are_located(edits in prop::collection::vec(edit(), 1..6)) {
        let text = apply(SEED, &edits);
        if let Err(e) = Policy::parse(std::path::Path::new("fuzz.yaml"), &text) {
            let lines = text.lines().count().max(1) + 1;
            prop_assert!(!e.diagnostics.is_empty());
            for d in &e.diagnostics {
                prop_assert!(d.line >= 1 && d.line <= lines, "line {} of {lines}: {d}", d.line);
                prop_assert!(d.column >= 1);
                prop_assert!(!d.message.is_empty());
            }
        }
    }

    #[test]
    fn arbitrary_bytes_as_a_manifest_never_panic_and_what_parses_reads_back_the_same(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(m) = serde_json::from_slice::<crate::manifest::Manifest>(&bytes) {
            let again: crate::manifest::Manifest =
                serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
            prop_assert_eq!(again, m);
        }
    }
}

/// A real point's manifest, its text mutated: parsing never panics; what
/// parses serialises to text that parses to the same manifest; read back
/// against the point's object, it is accepted exactly when its sizes and
/// digests are the object's, and then yields the bytes backed up; a
/// wrong size or digest is an integrity error.
#[test]
fn a_mutated_manifest_reads_back_only_when_its_sizes_and_digests_match() {
    use std::cell::Cell;

    use proptest::test_runner::TestRunner;
    use sha2::Digest as _;

    use crate::manifest::{CompressionInfo, Digest, Manifest, StoredObject};

    let dir = tempfile::tempdir().unwrap();
    let config = super::TargetConfig::from_address(dir.path().to_str().unwrap()).unwrap();
    let target = crate::backend::Target::open("nas", &config, dir.path()).unwrap();
    let payload: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 ^ (i % 7) as u8)
        .collect();
    let stored = zstd::encode_all(&payload[..], 3).unwrap();
    let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    let id = "20261121T060001Z-0a1b2c3d";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let object = crate::repository::layout::data("db-1", "shop", id);
    rt.block_on(target.op.write(&object, stored.clone()))
        .unwrap();
    let at: chrono::DateTime<chrono::Utc> = "2026-11-21T06:00:01.123456Z".parse().unwrap();
    let truth = Manifest {
        format: crate::manifest::FORMAT,
        id: id.into(),
        host: "db-1".into(),
        export: "shop".into(),
        kind: "postgres".into(),
        source: [("database".to_string(), "shop ü".to_string())].into(),
        consistency_time: at,
        started_at: at,
        finished_at: at + chrono::Duration::seconds(3),
        raw: Digest {
            size: payload.len() as u64,
            sha256: sha(&payload),
        },
        stored: StoredObject {
            object: object.clone(),
            size: stored.len() as u64,
            sha256: sha(&stored),
        },
        compression: CompressionInfo {
            algorithm: "zstd".into(),
            level: 3,
        },
        tools: [("pg_dump".to_string(), "15.8".to_string())].into(),
        agent: "drp-agent 0.1.0".into(),
        wal: None,
        binlog: None,
        encryption: None,
        signed_by: Some("0123456789abcdef".into()),
        incremental: None,
    };
    let text = serde_json::to_string_pretty(&truth).unwrap();
    let read = |m: &Manifest| {
        rt.block_on(crate::pipeline::read_verified(
            &target,
            m,
            &crate::keys::Identities::default(),
            crate::progress::silent(),
            |raw| {
                let mut out = Vec::new();
                raw.read_to_end(&mut out)
                    .map_err(|e| crate::Error::io("reading the point", e))?;
                Ok(out)
            },
        ))
    };
    assert_eq!(read(&truth).unwrap(), payload);

    let pieces = prop::sample::select(vec![
        "0", "7", "a", "f", "F", "e", "9", "1", "-", "\"", ",", ":", "{", "}", "[", "]", " ", "\\",
        "ü", "null",
    ]);
    let edit = prop_oneof![
        (any::<usize>(), 1usize..4).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), pieces.clone()).prop_map(|(a, s)| Edit::Insert(a, s.to_string())),
        (any::<usize>(), pieces).prop_map(|(a, s)| Edit::Replace(a, s.to_string())),
    ];
    let (unparsed, refused, intact) = (Cell::new(0), Cell::new(0), Cell::new(0));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(edit, 1..4), |edits| {
            let mutated = apply(&text, &edits);
            let Ok(m) = serde_json::from_str::<Manifest>(&mutated) else {
                unparsed.set(unparsed.get() + 1);
                return Ok(());
            };
            let again: Manifest =
                serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            prop_assert_eq!(&again, &m);
            let digests = (m.stored.size, &m.stored.sha256, &m.raw)
                == (truth.stored.size, &truth.stored.sha256, &truth.raw);
            // A path the target spells differently (opendal trims it)
            // may still name the object; the repository refuses any
            // path but the point's own before this is reached.
            let same_object = m.stored.object == truth.stored.object;
            let plain = m.encryption.is_none();
            match read(&m) {
                Ok(bytes) => {
                    prop_assert!(
                        digests && plain,
                        "read back with sizes or digests that are not the object's:\n{mutated}"
                    );
                    prop_assert!(bytes == payload, "read back other bytes");
                    intact.set(intact.get() + 1);
                }
                Err(e) => {
                    prop_assert!(
                        !(digests && same_object && plain),
                        "refused although it describes the object: {e}\n{mutated}"
                    );
                    if !digests && same_object && plain {
                        prop_assert!(
                            matches!(e, crate::Error::Integrity { .. }),
                            "{e}\n{mutated}"
                        );
                    }
                    refused.set(refused.get() + 1);
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "mutated manifests: {} unparsed, {} refused when read back, {} read back intact",
        unparsed.get(),
        refused.get(),
        intact.get()
    );
    // Both outcomes happened: the property was exercised, not skipped.
    assert!(
        refused.get() > 0 && intact.get() > 0,
        "{} unparsed, {} refused, {} read back",
        unparsed.get(),
        refused.get(),
        intact.get()
    );
}
