//! The members of an archive by name, and link resolution inside the archive.
//!
//! Member order in a tar is arbitrary, so the scan records every member here and the
//! image assembly looks them up by name at the end. Links are resolved by name inside this
//! table, never on the host filesystem.

use std::collections::HashMap;

use super::digester::FileFacts;

/// How many links one lookup may follow before it counts as a loop (Linux uses 40 too).
const MAX_LINK_HOPS: usize = 40;

#[derive(Debug)]
pub enum Member {
    File(FileFacts),
    /// Target as written in the archive, relative to the link's directory.
    Symlink(String),
    /// Target as written in the archive, relative to the archive root.
    Hardlink(String),
}

impl Member {
    /// Same content claim, for deciding whether a duplicate name is harmless.
    fn same_as(&self, other: &Member) -> bool {
        match (self, other) {
            (Member::File(a), Member::File(b)) => a.sha256 == b.sha256,
            (Member::Symlink(a), Member::Symlink(b))
            | (Member::Hardlink(a), Member::Hardlink(b)) => a == b,
            _ => false,
        }
    }
}

/// Members by normalised name.
#[derive(Debug, Default)]
pub struct Members {
    by_name: HashMap<String, Member>,
}

impl Members {
    /// Records a member. A name seen twice must carry the same content: an archive whose
    /// `manifest.json` (or any member) means two different things depending on which copy a
    /// reader keeps is rejected.
    pub fn insert(&mut self, raw_name: &str, member: Member) -> Result<(), String> {
        let name = normalize(raw_name)
            .ok_or_else(|| format!("member {raw_name:?} has a name outside the archive"))?;
        match self.by_name.get(&name) {
            Some(existing) if existing.same_as(&member) => Ok(()),
            Some(_) => Err(format!(
                "member {name:?} appears twice with different content"
            )),
            None => {
                self.by_name.insert(name, member);
                Ok(())
            }
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        normalize(name).is_some_and(|name| self.by_name.contains_key(&name))
    }

    /// Every regular file, by its own (unresolved) name.
    pub fn files(&self) -> impl Iterator<Item = (&str, &FileFacts)> {
        self.by_name
            .iter()
            .filter_map(|(name, member)| match member {
                Member::File(facts) => Some((name.as_str(), facts)),
                _ => None,
            })
    }

    /// The file a name refers to, following symlinks and hard links inside the archive.
    pub fn resolve(&self, name: &str) -> Result<&FileFacts, String> {
        let mut current =
            normalize(name).ok_or_else(|| format!("{name:?} points outside the archive"))?;
        for hop in 0..=MAX_LINK_HOPS {
            let next = match self.by_name.get(&current) {
                None if hop == 0 => return Err(format!("member {name:?} is missing")),
                None => {
                    return Err(format!(
                        "member {name:?} is a link to {current:?}, which is not in the archive"
                    ))
                }
                Some(Member::File(facts)) => return Ok(facts),
                Some(Member::Symlink(target)) => join_symlink(&current, target),
                Some(Member::Hardlink(target)) => normalize(target),
            };
            current = next.ok_or_else(|| {
                format!("member {name:?} is a link that points outside the archive")
            })?;
        }
        Err(format!(
            "member {name:?} is a link loop (more than {MAX_LINK_HOPS} hops)"
        ))
    }
}

/// Archive-relative name without `./` and `//` noise, with `..` applied. `None` when the
/// name climbs above the archive root or is absolute.
pub fn normalize(name: &str) -> Option<String> {
    if name.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// A symlink target is relative to the directory holding the link.
fn join_symlink(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    match link.rsplit_once('/') {
        Some((dir, _)) => normalize(&format!("{dir}/{target}")),
        None => normalize(target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::digester::tests::plain_facts;

    #[test]
    fn normalizes_dot_prefixes_and_rejects_escapes() {
        assert_eq!(
            normalize("./manifest.json").as_deref(),
            Some("manifest.json")
        );
        assert_eq!(normalize("a//./b/../c").as_deref(), Some("a/c"));
        assert_eq!(normalize("../etc/passwd"), None);
        assert_eq!(normalize("/etc/passwd"), None);
    }

    #[test]
    fn resolves_symlinks_relative_to_their_directory_and_hard_links_from_the_root() {
        let mut members = Members::default();
        members
            .insert("./blobs/sha256/aa", Member::File(plain_facts(b"x")))
            .unwrap();
        members
            .insert(
                "abc/layer.tar",
                Member::Symlink("../blobs/sha256/aa".into()),
            )
            .unwrap();
        members
            .insert("hard.tar", Member::Hardlink("./abc/layer.tar".into()))
            .unwrap();
        let target = members.resolve("blobs/sha256/aa").unwrap().sha256.clone();
        assert_eq!(members.resolve("./abc/layer.tar").unwrap().sha256, target);
        assert_eq!(members.resolve("hard.tar").unwrap().sha256, target);
    }

    #[test]
    fn rejects_escaping_looping_and_dangling_links() {
        let mut members = Members::default();
        members
            .insert("up", Member::Symlink("../../etc/passwd".into()))
            .unwrap();
        members
            .insert("abs", Member::Symlink("/etc/passwd".into()))
            .unwrap();
        members.insert("a", Member::Symlink("b".into())).unwrap();
        members.insert("b", Member::Symlink("a".into())).unwrap();
        members
            .insert("dangling", Member::Hardlink("nowhere".into()))
            .unwrap();
        assert!(members
            .resolve("up")
            .unwrap_err()
            .contains("outside the archive"));
        assert!(members
            .resolve("abs")
            .unwrap_err()
            .contains("outside the archive"));
        assert!(members.resolve("a").unwrap_err().contains("link loop"));
        assert_eq!(
            members.resolve("dangling").unwrap_err(),
            r#"member "dangling" is a link to "nowhere", which is not in the archive"#
        );
        assert_eq!(
            members.resolve("absent").unwrap_err(),
            r#"member "absent" is missing"#
        );
    }

    #[test]
    fn duplicate_names_must_agree() {
        let mut members = Members::default();
        members
            .insert("manifest.json", Member::File(plain_facts(b"[]")))
            .unwrap();
        members
            .insert("./manifest.json", Member::File(plain_facts(b"[]")))
            .unwrap();
        let error = members
            .insert("manifest.json", Member::File(plain_facts(b"[1]")))
            .unwrap_err();
        assert_eq!(
            error,
            r#"member "manifest.json" appears twice with different content"#
        );
    }
}
