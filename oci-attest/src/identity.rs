//! Who the wrapped command runs as, decided before anything starts, and the switch to it.
//!
//! oci-attest needs root (or `CAP_BPF`/`CAP_PERFMON`) to trace; the command must not share that
//! privilege, or it could read the signing key, signal or edit the tracer and sign its own story.
//! So the command runs as the user who asked for the run: the invoking user under `sudo`
//! (`SUDO_UID`/`SUDO_GID`), the one named with `--run-as`, or, when oci-attest itself is not
//! root, oci-attest's own user. Root runs the command only when `--run-as root` says so.
//!
//! The switch ([`Switch::apply`]) runs in a forked child between fork and exec, so it makes only
//! async-signal-safe system calls on data prepared before the fork. The same switch runs in a
//! short-lived probe ([`CommandIdentity::can_open`]) that proves the command cannot open the
//! signing key: the kernel decides, with the command's real credentials, rather than a reading of
//! mode bits and ACLs.

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nix::unistd::{Gid, Group, Uid, User};
use serde::Serialize;

use crate::exit::{failure, FailureKind};

/// Why the command runs as this identity (recorded as `source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentitySource {
    /// The user who invoked oci-attest through sudo (`SUDO_UID`/`SUDO_GID`).
    Sudo,
    /// `--run-as USER[:GROUP]` (also `--run-as root`).
    RunAs,
    /// oci-attest is not root: the command runs as oci-attest's own user.
    SameUser,
}

/// The identity the wrapped command runs as: recorded in the command-run predicate as
/// `identity`, printed by `verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommandIdentity {
    /// The user name from the user database.
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, from the user database (the primary group included).
    pub groups: Vec<u32>,
    /// The command ran as root (`--run-as root`): it could have read the key and tampered with
    /// the tracer, so the attestation is only as good as the command.
    pub root: bool,
    /// `PR_SET_NO_NEW_PRIVS` was set: no exec inside the command could raise its privileges.
    pub nonewprivs: bool,
    pub source: IdentitySource,
    /// The command could read the signing key (`--allow-readable-key`, or a root command).
    pub keyreadable: bool,
    #[serde(skip)]
    pub home: PathBuf,
}

/// What the user asked for on the command line.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// `--run-as USER[:GROUP]`.
    pub run_as: Option<String>,
    /// `--allow-new-privileges`: no `PR_SET_NO_NEW_PRIVS`.
    pub allow_new_privileges: bool,
}

/// The part of the environment that decides the identity (read once, so tests can pass it).
#[derive(Clone, Debug)]
pub struct Invoker {
    pub euid: u32,
    pub sudo_uid: Option<String>,
    pub sudo_gid: Option<String>,
}

impl Invoker {
    pub fn current() -> Invoker {
        let var = |name| std::env::var(name).ok().filter(|value| !value.is_empty());
        Invoker {
            euid: Uid::effective().as_raw(),
            sudo_uid: var("SUDO_UID"),
            sudo_gid: var("SUDO_GID"),
        }
    }
}

/// The identity a run of the command uses, or why there is none (exit 125,
/// `command-would-run-as-root`).
pub fn resolve(request: &Request, invoker: &Invoker) -> anyhow::Result<CommandIdentity> {
    let nonewprivs = !request.allow_new_privileges;
    if invoker.euid != 0 {
        if let Some(run_as) = &request.run_as {
            let wanted = parse_run_as(run_as)?;
            if wanted.0.uid.as_raw() != invoker.euid {
                anyhow::bail!(
                    "--run-as {run_as}: oci-attest is not root, so it cannot switch the command \
                     to another user (run it through sudo, or leave --run-as out to run the \
                     command as {})",
                    CommandIdentity::current().user
                );
            }
        }
        let mut identity = CommandIdentity::current();
        identity.nonewprivs = nonewprivs;
        identity.keyreadable = false;
        return Ok(identity);
    }
    let (user, group, source) = match (&request.run_as, &invoker.sudo_uid) {
        (Some(run_as), _) => {
            let (user, group) = parse_run_as(run_as)?;
            (user, group, IdentitySource::RunAs)
        }
        (None, Some(sudo_uid)) => {
            let uid: u32 = sudo_uid
                .parse()
                .with_context(|| format!("SUDO_UID={sudo_uid} is not a user id"))?;
            let user = User::from_uid(Uid::from_raw(uid))
                .context("cannot read the user database")?
                .with_context(|| format!("SUDO_UID={uid} names no user in the user database"))?;
            let group = match &invoker.sudo_gid {
                Some(sudo_gid) => Gid::from_raw(
                    sudo_gid
                        .parse()
                        .with_context(|| format!("SUDO_GID={sudo_gid} is not a group id"))?,
                ),
                None => user.gid,
            };
            (user, group, IdentitySource::Sudo)
        }
        (None, None) => {
            return Err(failure(
                FailureKind::CommandWouldRunAsRoot,
                "oci-attest runs as root and nobody said whom to run the command as: it would \
                 run as root, able to read the signing key and tamper with the tracer. Pass \
                 --run-as USER (or start oci-attest through sudo), or --run-as root to accept an \
                 attestation the command could forge",
            ));
        }
    };
    if user.uid.is_root() && source == IdentitySource::Sudo {
        return Err(failure(
            FailureKind::CommandWouldRunAsRoot,
            "SUDO_UID is 0: sudo was started by root, so the command would run as root. Pass \
             --run-as USER, or --run-as root to accept an attestation the command could forge",
        ));
    }
    let name = CString::new(user.name.as_bytes()).context("user name holds a NUL byte")?;
    let groups = nix::unistd::getgrouplist(&name, group)
        .with_context(|| format!("cannot read the groups of {}", user.name))?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    let root = user.uid.is_root();
    Ok(CommandIdentity {
        user: user.name,
        uid: user.uid.as_raw(),
        gid: group.as_raw(),
        groups,
        root,
        nonewprivs,
        source,
        keyreadable: root,
        home: user.dir,
    })
}

/// `USER[:GROUP]`, each a name or a number, looked up in the user database.
fn parse_run_as(text: &str) -> anyhow::Result<(User, Gid)> {
    let (user_part, group_part) = match text.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (text, None),
    };
    let user = match user_part.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(user_part),
    }
    .context("cannot read the user database")?
    .with_context(|| format!("--run-as {text}: no user {user_part:?} in the user database"))?;
    let group = match group_part {
        None => user.gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => Gid::from_raw(gid),
            Err(_) => {
                Group::from_name(group)
                    .context("cannot read the group database")?
                    .with_context(|| {
                        format!("--run-as {text}: no group {group:?} in the group database")
                    })?
                    .gid
            }
        },
    };
    Ok((user, group))
}

impl CommandIdentity {
    /// oci-attest's own identity, switched to nothing (root keeps its capabilities): for the
    /// library's tests and for tools that run a command of their own choosing.
    pub fn current() -> CommandIdentity {
        let (uid, gid) = (Uid::effective(), Gid::effective());
        let user = User::from_uid(uid).ok().flatten();
        CommandIdentity {
            user: user
                .as_ref()
                .map_or_else(|| uid.to_string(), |user| user.name.clone()),
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            groups: nix::unistd::getgroups()
                .map(|groups| groups.into_iter().map(Gid::as_raw).collect())
                .unwrap_or_else(|_| vec![gid.as_raw()]),
            root: uid.is_root(),
            nonewprivs: true,
            source: IdentitySource::SameUser,
            keyreadable: true,
            home: user.map_or_else(|| PathBuf::from("/"), |user| user.dir),
        }
    }

    /// One line for logs: `alice (uid 1000, gid 1000, groups 1000,27)`.
    pub fn describe(&self) -> String {
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        format!(
            "{} (uid {}, gid {}, groups {})",
            self.user,
            self.uid,
            self.gid,
            groups.join(",")
        )
    }

    /// Whether the command's identity would be a different one from oci-attest's.
    fn switches(&self) -> bool {
        self.source != IdentitySource::SameUser
    }

    /// Members of the `docker` group can start a container that mounts `/` and read any file,
    /// the key included: the group is root-equivalent.
    pub fn docker_group(&self) -> Option<u32> {
        let docker = Group::from_name("docker").ok().flatten()?.gid.as_raw();
        (!self.root && self.groups.contains(&docker)).then_some(docker)
    }

    /// The command's environment: oci-attest's own, without oci-attest's variables, and with
    /// `HOME`, `USER` and `LOGNAME` of the user when the identity changes.
    pub fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(name, _)| !name.as_bytes().starts_with(b"OCI_ATTEST_"))
            .collect();
        if self.switches() {
            env.retain(|(name, _)| {
                !["HOME", "USER", "LOGNAME"].contains(&&*name.to_string_lossy())
            });
            env.push(("HOME".into(), self.home.clone().into_os_string()));
            env.push(("USER".into(), self.user.clone().into()));
            env.push(("LOGNAME".into(), self.user.clone().into()));
        }
        env
    }

    /// The credential switch, prepared for use between fork and exec.
    pub fn switch(&self) -> Switch {
        let cap_last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(63);
        Switch {
            ids: self
                .switches()
                .then(|| (self.uid, self.gid, self.groups.clone())),
            drop_capabilities: !self.root,
            // Only a root oci-attest may shrink the bounding set, and a setuid newuidmap needs
            // it whole under --allow-new-privileges.
            drop_bounding_set: !self.root && self.nonewprivs && Uid::effective().is_root(),
            cap_last,
            no_new_privs: self.nonewprivs,
        }
    }

    /// Can this identity open `path` for reading? Tried for real: a forked probe takes on the
    /// identity (the same [`Switch`] as the command) and opens the file, so permissions, ACLs,
    /// every directory on the way and LSMs all have their say.
    pub fn can_open(&self, path: &Path) -> anyhow::Result<bool> {
        let path = std::path::absolute(path)
            .with_context(|| format!("{}: cannot resolve", path.display()))?;
        let c_path = CString::new(path.as_os_str().as_bytes())
            .with_context(|| format!("{}: path holds a NUL byte", path.display()))?;
        let switch = self.switch();
        let prepared = switch.prepare();
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: the child only makes async-signal-safe calls (the switch, open, write,
        // _exit) on memory prepared before the fork.
        match unsafe { nix::unistd::fork() }.context("fork of the key probe failed")? {
            nix::unistd::ForkResult::Child => {
                drop(read_end);
                use std::os::fd::AsRawFd as _;
                // SAFETY: as above.
                unsafe {
                    let answer: [u8; 1] = if switch.apply(&prepared).is_err() {
                        [b'e']
                    } else {
                        let fd = libc::open(
                            c_path.as_ptr(),
                            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
                        );
                        if fd >= 0 {
                            [b'y']
                        } else {
                            [b'n']
                        }
                    };
                    libc::write(write_end.as_raw_fd(), answer.as_ptr().cast(), 1);
                    libc::_exit(0)
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(write_end);
                let mut answer = [0u8; 1];
                let mut file = std::fs::File::from(read_end);
                let read = io::Read::read(&mut file, &mut answer);
                let _ = nix::sys::wait::waitpid(child, None);
                match (read, answer[0]) {
                    (Ok(1), b'y') => Ok(true),
                    (Ok(1), b'n') => Ok(false),
                    _ => anyhow::bail!(
                        "the probe could not take on the identity {} to test {}",
                        self.describe(),
                        path.display()
                    ),
                }
            }
        }
    }
}

/// The credential change of the command's process, prepared before fork.
#[derive(Clone, Debug)]
pub struct Switch {
    /// (uid, gid, supplementary groups) to take on; `None` keeps oci-attest's.
    ids: Option<(u32, u32, Vec<u32>)>,
    /// Empty every capability set (effective, permitted, inheritable, ambient).
    drop_capabilities: bool,
    drop_bounding_set: bool,
    cap_last: u32,
    no_new_privs: bool,
}

/// What [`Switch::apply`] reads: plain integers and arrays, owned by the caller of `fork`.
pub struct PreparedSwitch {
    groups: Vec<libc::gid_t>,
}

/// Which step of the switch failed, with its errno.
#[derive(Clone, Copy, Debug)]
pub struct SwitchError {
    pub step: &'static str,
    pub errno: i32,
}

impl Switch {
    pub fn prepare(&self) -> PreparedSwitch {
        PreparedSwitch {
            groups: self
                .ids
                .as_ref()
                .map(|(_, _, groups)| groups.clone())
                .unwrap_or_default(),
        }
    }

    /// Takes on the identity. Async-signal-safe: only system calls on `prepared` and `self`.
    ///
    /// # Safety
    /// Call in a forked child before exec; it changes the process's credentials for good.
    pub unsafe fn apply(&self, prepared: &PreparedSwitch) -> Result<(), SwitchError> {
        let check = |step: &'static str, result: libc::c_long| {
            if result < 0 {
                Err(SwitchError {
                    step,
                    // SAFETY: reading errno of this thread.
                    errno: unsafe { *libc::__errno_location() },
                })
            } else {
                Ok(())
            }
        };
        unsafe {
            if self.drop_capabilities {
                check(
                    "clear the ambient capabilities",
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_CLEAR_ALL,
                        0,
                        0,
                        0,
                    )
                    .into(),
                )?;
                if self.drop_bounding_set {
                    for cap in 0..=self.cap_last {
                        let dropped =
                            libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0);
                        // EINVAL: a capability this kernel does not know.
                        if dropped < 0 && *libc::__errno_location() != libc::EINVAL {
                            check("drop the capability bounding set", dropped.into())?;
                        }
                    }
                }
            }
            if let Some((uid, gid, _)) = &self.ids {
                check(
                    "setgroups",
                    libc::setgroups(prepared.groups.len(), prepared.groups.as_ptr()).into(),
                )?;
                check("setresgid", libc::setresgid(*gid, *gid, *gid).into())?;
                check("setresuid", libc::setresuid(*uid, *uid, *uid).into())?;
            }
            if self.drop_capabilities {
                // setresuid away from root cleared the permitted and effective sets, but not
                // the inheritable one; capset empties all three (and a same-user oci-attest's
                // file capabilities).
                let mut header = CapHeader {
                    version: LINUX_CAPABILITY_VERSION_3,
                    pid: 0,
                };
                let data = [CapData::default(); 2];
                check(
                    "capset",
                    libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
                )?;
            }
            if self.no_new_privs {
                check(
                    "PR_SET_NO_NEW_PRIVS",
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into(),
                )?;
            }
        }
        Ok(())
    }
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct` (libc has no capset wrapper).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_invoker(sudo: Option<(&str, &str)>) -> Invoker {
        Invoker {
            euid: 0,
            sudo_uid: sudo.map(|(uid, _)| uid.to_owned()),
            sudo_gid: sudo.map(|(_, gid)| gid.to_owned()),
        }
    }

    #[test]
    fn root_without_sudo_or_run_as_is_refused_naming_both_flags() {
        let error = resolve(&Request::default(), &root_invoker(None)).unwrap_err();
        assert_eq!(
            crate::exit::kind_of(&error),
            FailureKind::CommandWouldRunAsRoot
        );
        let message = error.to_string();
        assert!(message.contains("--run-as USER"), "{message}");
        assert!(message.contains("--run-as root"), "{message}");
    }

    #[test]
    fn sudo_uid_selects_the_invoking_user_and_its_groups() {
        let identity =
            resolve(&Request::default(), &root_invoker(Some(("65534", "65534")))).unwrap();
        assert_eq!(identity.uid, 65534);
        assert_eq!(identity.gid, 65534);
        assert_eq!(identity.user, "nobody");
        assert!(identity.groups.contains(&65534));
        assert!(!identity.root && identity.nonewprivs && !identity.keyreadable);
        assert_eq!(identity.source, IdentitySource::Sudo);
        let env = identity.environment();
        assert!(env.contains(&("USER".into(), "nobody".into())));
        assert!(env.contains(&("LOGNAME".into(), "nobody".into())));
    }

    #[test]
    fn sudo_by_root_is_refused() {
        let error = resolve(&Request::default(), &root_invoker(Some(("0", "0")))).unwrap_err();
        assert_eq!(
            crate::exit::kind_of(&error),
            FailureKind::CommandWouldRunAsRoot
        );
    }

    #[test]
    fn run_as_wins_over_sudo_and_takes_a_group() {
        let request = Request {
            run_as: Some("nobody:root".into()),
            allow_new_privileges: true,
        };
        let identity = resolve(&request, &root_invoker(Some(("65534", "65534")))).unwrap();
        assert_eq!((identity.uid, identity.gid), (65534, 0));
        assert!(!identity.nonewprivs);
        assert_eq!(identity.source, IdentitySource::RunAs);
        let root = Request {
            run_as: Some("root".into()),
            allow_new_privileges: false,
        };
        let identity = resolve(&root, &root_invoker(None)).unwrap();
        assert!(identity.root && identity.keyreadable);
    }

    #[test]
    fn unknown_users_and_groups_are_named() {
        for (run_as, named) in [
            ("no-such-user-xyz", "no-such-user-xyz"),
            ("nobody:no-such-group-xyz", "no-such-group-xyz"),
        ] {
            let request = Request {
                run_as: Some(run_as.into()),
                allow_new_privileges: false,
            };
            let error = resolve(&request, &root_invoker(None)).unwrap_err();
            assert!(error.to_string().contains(named), "{error}");
        }
    }

    #[test]
    fn oci_attest_variables_never_reach_the_command() {
        std::env::set_var("OCI_ATTEST_PROBE_VARIABLE", "secret");
        let env = CommandIdentity::current().environment();
        assert!(env
            .iter()
            .all(|(name, _)| !name.as_bytes().starts_with(b"OCI_ATTEST_")));
    }
}
