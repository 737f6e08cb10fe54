//! The repository's copy of the contract's data (`tests/data/contract/`) is what every
//! test reads; when the shared contract folder exists beside the repository, the copy
//! must equal it byte for byte, so the two never drift.

use std::collections::BTreeMap;
use std::path::Path;

use match_stats_harness::contract;

fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(name, std::fs::read(&path).expect("readable file"));
            }
        }
    }
    out
}

#[test]
fn the_repositorys_copy_of_the_contract_equals_the_shared_one() {
    let copy = files(&contract::data_dir().join("contract"));
    assert!(
        copy.contains_key("CONTRACT.md") && copy.len() > 40,
        "the copy is complete"
    );
    let Some(shared) = contract::shared_dir() else {
        eprintln!(
            "contract data: no shared contract folder beside the repository; the copy is used as it is"
        );
        return;
    };
    let shared = files(&shared);
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&copy), names(&shared), "the same files");
    for (name, bytes) in &shared {
        assert!(
            &copy[name] == bytes,
            "tests/data/contract/{name} differs from the shared contract's: copy it again"
        );
    }
}
