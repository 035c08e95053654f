//! Image archives made offline and saved by every real tool, with independent expectations.
//!
//! Images are built from a busybox-static rootfs (`podman import`, `podman build` with COPY
//! steps only, so no container ever runs), then saved with skopeo, podman, buildah, umoci,
//! docker (Debian's dockerd 20.10) and ctr. `fixtures.json` lists every archive with the values
//! a correct reader must find ([`crate::expect`]). A complete output directory is reused.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _};
use serde::{Deserialize, Serialize};

use crate::command::{first_hex_word, run, sh, stdout_of};
use crate::daemons::DaemonEnv;
use crate::expect::{self, ArchiveExpectation};
use crate::storage::{remove_tree, ContainersStorage};

pub const INDEX_FILE: &str = "fixtures.json";
/// Bump when the set of fixtures changes, so old caches are rebuilt.
const INDEX_VERSION: u32 = 1;

/// The image names the fixtures hold (also what end-to-end tests load and save again).
pub const APP_IMAGE: &str = "localhost/fx/app:1";
pub const OTHER_IMAGE: &str = "localhost/fx/other:1";
pub const THIRD_IMAGE: &str = "localhost/fx/third:1";
/// Fixture holding [`APP_IMAGE`] (4 layers, the 2nd and 4th identical) as a docker-archive.
pub const APP_ARCHIVE: &str = "skopeo-docker-archive";
/// Fixture holding [`APP_IMAGE`], [`OTHER_IMAGE`] and [`THIRD_IMAGE`] as one docker-archive.
pub const MULTI_ARCHIVE: &str = "podman-save-multi";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FixtureIndex {
    pub version: u32,
    pub fixtures: Vec<Fixture>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fixture {
    /// Stable name tests refer to.
    pub name: String,
    /// Path relative to the fixture directory (a file, or a directory for OCI layouts).
    pub path: String,
    /// The command that wrote it.
    pub made_by: String,
    pub expect: ArchiveExpectation,
}

/// A loaded fixture directory.
#[derive(Clone, Debug)]
pub struct Fixtures {
    pub dir: PathBuf,
    pub index: FixtureIndex,
}

impl Fixtures {
    /// Reads `fixtures.json` in `dir`; fails unless every listed fixture exists.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let index_path = dir.join(INDEX_FILE);
        let text = std::fs::read_to_string(&index_path)
            .with_context(|| format!("cannot read {}", index_path.display()))?;
        let index: FixtureIndex = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a fixture index", index_path.display()))?;
        ensure!(
            index.version == INDEX_VERSION,
            "{} is version {}, expected {INDEX_VERSION}",
            index_path.display(),
            index.version
        );
        for fixture in &index.fixtures {
            let path = dir.join(&fixture.path);
            ensure!(path.exists(), "fixture {} is missing", path.display());
        }
        Ok(Fixtures {
            dir: dir.to_path_buf(),
            index,
        })
    }

    /// The fixtures named by `OCI_ATTEST_FIXTURES` (or `.fixtures` in the workspace). When they
    /// are missing but the daemons are announced in the environment, they are built now.
    pub fn from_env() -> anyhow::Result<Self> {
        let dir = std::env::var_os("OCI_ATTEST_FIXTURES")
            .map_or_else(crate::paths::default_fixtures_dir, PathBuf::from);
        Self::load(&dir).or_else(|missing| match DaemonEnv::from_env() {
            Ok(daemons) => ensure_built(&std::path::absolute(&dir)?, &daemons),
            Err(no_daemons) => Err(missing.context(format!(
                "image fixtures are not built (run `cargo xtask fixtures` or `cargo xtask test`) \
                 and cannot be built here: {no_daemons:#}"
            ))),
        })
    }

    pub fn get(&self, name: &str) -> anyhow::Result<&Fixture> {
        self.index
            .fixtures
            .iter()
            .find(|fixture| fixture.name == name)
            .with_context(|| format!("no fixture named {name} in {}", self.dir.display()))
    }

    pub fn path(&self, fixture: &Fixture) -> PathBuf {
        self.dir.join(&fixture.path)
    }

    /// The image ID of `image` (a tag) as recorded for fixture `name`.
    pub fn image_id(&self, name: &str, image: &str) -> anyhow::Result<String> {
        self.get(name)?
            .expect
            .images
            .iter()
            .find(|expected| {
                expected
                    .tags
                    .as_ref()
                    .is_some_and(|tags| tags.iter().any(|tag| tag == image))
            })
            .map(|expected| expected.imageid.clone())
            .with_context(|| format!("{image} is not in fixture {name}"))
    }
}

/// Builds the fixtures into `out` unless it already holds a complete set. Serialised by a lock
/// file beside `out`, so concurrent callers build once.
pub fn ensure_built(out: &Path, daemons: &DaemonEnv) -> anyhow::Result<Fixtures> {
    let parent = out
        .parent()
        .with_context(|| format!("{} has no parent directory", out.display()))?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let lock_path = out.with_extension("lock");
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    if let Ok(fixtures) = Fixtures::load(out) {
        return Ok(fixtures);
    }
    ensure!(
        is_replaceable(out)?,
        "refusing to replace {}: it is neither empty nor a fixture directory (no {INDEX_FILE})",
        out.display()
    );
    let staging = out.with_extension("partial");
    remove_tree(&staging)?;
    remove_tree(out)?;
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let work = tempfile::Builder::new()
        .prefix("oci-attest-fixtures-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let built =
        Builder::new(&staging, work.path(), daemons).and_then(|mut builder| builder.build_all());
    let cleanup = remove_tree(work.path());
    let index = built?;
    cleanup?;
    let index_text = serde_json::to_string_pretty(&index)?;
    std::fs::write(staging.join(INDEX_FILE), index_text + "\n")?;
    std::fs::rename(&staging, out)
        .with_context(|| format!("cannot move {} to {}", staging.display(), out.display()))?;
    Fixtures::load(out)
}

/// Builds the fixture images into `storage`, offline: busybox rootfs → `podman import` →
/// three `podman build`s (COPY only, no container runs), plus an arm64 image
/// (`buildah from scratch`) for the multi-arch index. `work` holds the build contexts.
pub fn build_images(storage: &ContainersStorage, work: &Path) -> anyhow::Result<()> {
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    let busybox = Path::new("/bin/busybox");
    ensure!(
        busybox.is_file(),
        "{} is missing (apt-get install busybox-static)",
        busybox.display()
    );
    std::fs::copy(busybox, rootfs.join("bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh"))?;
    let rootfs_tar = work.join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&rootfs_tar)
        .arg("."))?;
    run(storage
        .command("podman")
        .arg("import")
        .arg(&rootfs_tar)
        .arg("localhost/fx/base:1"))?;

    let context = work.join("context");
    std::fs::create_dir_all(context.join("data"))?;
    std::fs::write(
        context.join("hello.txt"),
        "hello from an oci-attest fixture\n",
    )?;
    std::fs::write(context.join("other.txt"), "the other image\n")?;
    std::fs::write(context.join("third.txt"), "the third image\n")?;
    // Incompressible bytes so gzip/zstd layers differ clearly from plain ones.
    run(Command::new("head")
        .args(["-c", "200000", "/dev/urandom"])
        .stdout(File::create(context.join("data/random.bin"))?))?;
    // The 2nd and 4th layers are byte-identical: docker save writes the repeat as a symlink.
    let containerfiles = [
        (
            APP_IMAGE,
            "COPY hello.txt /hello.txt\nCOPY data /data\nCOPY hello.txt /hello.txt\n",
        ),
        (OTHER_IMAGE, "COPY other.txt /other.txt\n"),
        (THIRD_IMAGE, "COPY third.txt /third.txt\n"),
    ];
    for (index, (image, steps)) in containerfiles.iter().enumerate() {
        let file = work.join(format!("Containerfile.{index}"));
        std::fs::write(&file, format!("FROM localhost/fx/base:1\n{steps}"))?;
        run(storage
            .command("podman")
            .args([
                "build",
                "--quiet",
                "--pull=never",
                "--network",
                "none",
                "-t",
                image,
                "-f",
            ])
            .arg(&file)
            .arg(&context))?;
    }

    let container = stdout_of(storage.command("buildah").args(["from", "scratch"]))?;
    run(storage
        .command("buildah")
        .args(["copy", "--quiet", &container])
        .arg(context.join("hello.txt"))
        .arg("/hello.txt"))?;
    run(storage
        .command("buildah")
        .args(["config", "--os", "linux", "--arch", "arm64", &container]))?;
    run(storage
        .command("buildah")
        .args(["commit", "--quiet", &container, "localhost/fx/arm:1"]))?;
    run(storage.command("buildah").args(["rm", &container]))?;
    Ok(())
}

/// Only an absent or empty directory, or an outdated fixture set, may be deleted and rebuilt.
fn is_replaceable(out: &Path) -> anyhow::Result<bool> {
    if !out.exists() || out.join(INDEX_FILE).is_file() {
        return Ok(true);
    }
    let mut entries =
        std::fs::read_dir(out).with_context(|| format!("cannot list {}", out.display()))?;
    Ok(entries.next().is_none())
}

struct Builder<'a> {
    out: PathBuf,
    work: PathBuf,
    storage: ContainersStorage,
    daemons: &'a DaemonEnv,
    fixtures: Vec<Fixture>,
}

impl<'a> Builder<'a> {
    fn new(out: &Path, work: &Path, daemons: &'a DaemonEnv) -> anyhow::Result<Self> {
        Ok(Builder {
            out: std::path::absolute(out)?,
            work: work.to_path_buf(),
            storage: ContainersStorage::create(&work.join("storage"))?,
            daemons,
            fixtures: Vec::new(),
        })
    }

    fn tool(&self, program: &str) -> Command {
        self.storage.command(program)
    }

    /// Records a fixture written by `made_by` at `out/relative`, computing its expectations.
    fn record(&mut self, name: &str, relative: &str, made_by: &str) -> anyhow::Result<()> {
        let path = self.out.join(relative);
        let expect = expect::compute(&path)?;
        self.fixtures.push(Fixture {
            name: name.to_owned(),
            path: relative.to_owned(),
            made_by: made_by.to_owned(),
            expect,
        });
        Ok(())
    }

    /// Runs a save `command` that writes `out/relative`, then records it.
    fn save(&mut self, name: &str, relative: &str, mut command: Command) -> anyhow::Result<()> {
        let made_by =
            crate::command::describe(&command).replace(&*self.out.to_string_lossy(), "$OUT");
        run(&mut command)?;
        self.record(name, relative, &made_by)
    }

    fn out_path(&self, relative: &str) -> PathBuf {
        self.out.join(relative)
    }

    fn build_all(&mut self) -> anyhow::Result<FixtureIndex> {
        build_images(&self.storage, &self.work)?;
        self.save_with_containers_tools()?;
        self.save_with_umoci()?;
        self.write_crane_style()?;
        self.save_with_docker()?;
        self.save_with_ctr()?;
        self.cross_check_with_tools()?;
        Ok(FixtureIndex {
            version: INDEX_VERSION,
            fixtures: std::mem::take(&mut self.fixtures),
        })
    }

    fn save_with_containers_tools(&mut self) -> anyhow::Result<()> {
        let storage_app = format!("containers-storage:{APP_IMAGE}");
        let out = self.out.clone();
        let target = move |relative: &str, transport: &str, suffix: &str| {
            format!("{transport}:{}{suffix}", out.join(relative).display())
        };

        let mut skopeo = self.tool("skopeo");
        skopeo.args([
            "copy",
            "-q",
            &storage_app,
            &target(
                "skopeo-docker.tar",
                "docker-archive",
                &format!(":{APP_IMAGE}"),
            ),
        ]);
        self.save(APP_ARCHIVE, "skopeo-docker.tar", skopeo)?;

        let mut skopeo = self.tool("skopeo");
        skopeo.args([
            "copy",
            "-q",
            &storage_app,
            &target("skopeo-oci.tar", "oci-archive", &format!(":{APP_IMAGE}")),
        ]);
        self.save("skopeo-oci-archive", "skopeo-oci.tar", skopeo)?;

        let mut skopeo = self.tool("skopeo");
        skopeo.args([
            "copy",
            "-q",
            "--dest-compress-format",
            "zstd",
            &storage_app,
            &target(
                "skopeo-oci-zstd.tar",
                "oci-archive",
                &format!(":{APP_IMAGE}"),
            ),
        ]);
        self.save("skopeo-oci-archive-zstd", "skopeo-oci-zstd.tar", skopeo)?;

        let mut podman = self.tool("podman");
        podman
            .args(["save", "-q", "-o"])
            .arg(self.out_path("podman-docker.tar"))
            .arg(APP_IMAGE);
        self.save("podman-save-docker-archive", "podman-docker.tar", podman)?;

        let mut podman = self.tool("podman");
        podman
            .args(["save", "-q", "--format", "oci-archive", "-o"])
            .arg(self.out_path("podman-oci.tar"))
            .arg(APP_IMAGE);
        self.save("podman-save-oci-archive", "podman-oci.tar", podman)?;

        let mut podman = self.tool("podman");
        podman
            .args(["save", "-q", "-m", "-o"])
            .arg(self.out_path("podman-multi.tar"))
            .args([APP_IMAGE, OTHER_IMAGE, THIRD_IMAGE]);
        self.save(MULTI_ARCHIVE, "podman-multi.tar", podman)?;

        let mut skopeo = self.tool("skopeo");
        skopeo.args([
            "copy",
            "-q",
            &storage_app,
            &target("oci-layout", "oci", ":1"),
        ]);
        self.save("skopeo-oci-layout-dir", "oci-layout", skopeo)?;

        // A tar of the layout with `./`-prefixed member names.
        let mut tar = Command::new("tar");
        tar.arg("-C")
            .arg(self.out_path("oci-layout"))
            .arg("-cf")
            .arg(self.out_path("oci-layout-dotslash.tar"))
            .arg(".");
        self.save("oci-layout-tar-dotslash", "oci-layout-dotslash.tar", tar)?;

        let mut buildah = self.tool("buildah");
        buildah.args([
            "push",
            "-q",
            APP_IMAGE,
            &target("buildah-docker.tar", "docker-archive", ""),
        ]);
        self.save("buildah-push-docker-archive", "buildah-docker.tar", buildah)?;

        // Multi-arch: index.json → image index → two platform manifests.
        run(self
            .tool("buildah")
            .args(["manifest", "create", "localhost/fx/multiarch:1"]))?;
        for image in [APP_IMAGE, "localhost/fx/arm:1"] {
            run(self.tool("buildah").args([
                "manifest",
                "add",
                "localhost/fx/multiarch:1",
                &format!("containers-storage:{image}"),
            ]))?;
        }
        let mut buildah = self.tool("buildah");
        buildah.args([
            "manifest",
            "push",
            "-q",
            "--all",
            "localhost/fx/multiarch:1",
            &target("multiarch", "oci", ":1"),
        ]);
        self.save("buildah-multiarch-layout-dir", "multiarch", buildah)?;
        let mut tar = Command::new("tar");
        tar.arg("-C")
            .arg(self.out_path("multiarch"))
            .arg("-cf")
            .arg(self.out_path("multiarch.tar"))
            .args(["oci-layout", "index.json", "blobs"]);
        self.save("buildah-multiarch-tar", "multiarch.tar", tar)
    }

    /// umoci writes gzip layers; mixing them into images skopeo wrote with plain and zstd
    /// layers gives the mixed-compression cases. `umoci new` alone gives a zero-layer image.
    fn save_with_umoci(&mut self) -> anyhow::Result<()> {
        let layout = self.out_path("umoci-mixed");
        let layout_arg = |tag: &str| format!("{}:{tag}", layout.display());
        run(self.tool("skopeo").args([
            "copy",
            "-q",
            "--dest-oci-accept-uncompressed-layers",
            &format!(
                "docker-archive:{}",
                self.out_path("skopeo-docker.tar").display()
            ),
            &format!("oci:{}", layout_arg("plain-gzip")),
        ]))?;
        run(self.tool("skopeo").args([
            "copy",
            "-q",
            "--dest-compress-format",
            "zstd",
            &format!("containers-storage:{OTHER_IMAGE}"),
            &format!("oci:{}", layout_arg("zstd-gzip")),
        ]))?;
        let added = self.work.join("context/third.txt");
        for tag in ["plain-gzip", "zstd-gzip"] {
            run(self
                .tool("umoci")
                .args(["insert", "--image", &layout_arg(tag)])
                .arg(&added)
                .arg("/added.txt"))?;
        }
        self.record(
            "umoci-mixed-layout-dir",
            "umoci-mixed",
            "skopeo copy (plain / zstd layers) + umoci insert (gzip layer)",
        )?;
        self.ensure_mixed_compression("umoci-mixed")?;
        let mut tar = Command::new("tar");
        tar.arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(self.out_path("umoci-mixed.tar"))
            .args(["oci-layout", "index.json", "blobs"]);
        self.save("umoci-mixed-tar", "umoci-mixed.tar", tar)?;

        let zero = self.work.join("zero-layout");
        run(self.tool("umoci").args(["init", "--layout"]).arg(&zero))?;
        run(self
            .tool("umoci")
            .args(["new", "--image", &format!("{}:zero", zero.display())]))?;
        let mut skopeo = self.tool("skopeo");
        skopeo.args([
            "copy",
            "-q",
            &format!("oci:{}:zero", zero.display()),
            &format!(
                "docker-archive:{}:localhost/fx/zero:1",
                self.out_path("zero-layer.tar").display()
            ),
        ]);
        self.save("zero-layer-docker-archive", "zero-layer.tar", skopeo)?;
        let mut tar = Command::new("tar");
        tar.arg("-C")
            .arg(&zero)
            .arg("-cf")
            .arg(self.out_path("zero-layer.oci.tar"))
            .arg(".");
        self.save("zero-layer-oci-tar", "zero-layer.oci.tar", tar)
    }

    /// Guards the point of the mixed fixture: the layout must really hold all three codecs.
    fn ensure_mixed_compression(&self, relative: &str) -> anyhow::Result<()> {
        let codecs = sh(
            r#"for blob in "$1"/blobs/sha256/*; do head -c4 "$blob" | od -An -tx1 | tr -d ' \n'; echo; done"#,
            [self.out_path(relative)],
        )?;
        let has = |prefix: &str| codecs.lines().any(|magic| magic.starts_with(prefix));
        ensure!(
            has("1f8b")
                && has("28b52ffd")
                && codecs.lines().any(|magic| !magic.starts_with("1f8b")
                    && !magic.starts_with("28b52ffd")
                    && !magic.starts_with("7b")),
            "{relative}: expected gzip, zstd and plain blobs, found magics:\n{codecs}"
        );
        Ok(())
    }

    /// crane is not packaged for Debian; this writes its legacy tarball layout from the app
    /// image: config member `sha256:<hex>`, layers `<hex of the gzip blob>.tar.gz`.
    fn write_crane_style(&mut self) -> anyhow::Result<()> {
        let source = self.work.join("crane-source");
        let staging = self.work.join("crane");
        std::fs::create_dir_all(&source)?;
        std::fs::create_dir_all(&staging)?;
        run(Command::new("tar")
            .arg("-xf")
            .arg(self.out_path("skopeo-docker.tar"))
            .arg("-C")
            .arg(&source))?;
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(source.join("manifest.json"))?)?;
        let entry = manifest
            .get(0)
            .context("skopeo wrote an empty manifest.json")?;
        let config_name = entry["Config"]
            .as_str()
            .context("manifest.json without Config")?;
        let config_hex = first_hex_word(&crate::command::sha256sum(&source.join(config_name))?)
            .context("config digest")?;
        let config_member = format!("sha256:{config_hex}");
        std::fs::copy(source.join(config_name), staging.join(&config_member))?;
        let mut members = vec!["manifest.json".to_owned(), config_member.clone()];
        let mut layer_names = Vec::new();
        for layer in entry["Layers"]
            .as_array()
            .context("manifest.json without Layers")?
        {
            let layer = layer.as_str().context("non-string layer")?;
            let compressed = staging.join("layer.gz");
            run(Command::new("gzip")
                .args(["-n", "-c"])
                .arg(source.join(layer))
                .stdout(File::create(&compressed)?))?;
            let name = format!("{}.tar.gz", crate::command::sha256sum(&compressed)?);
            std::fs::rename(&compressed, staging.join(&name))?;
            if !members.contains(&name) {
                members.push(name.clone());
            }
            layer_names.push(name);
        }
        let crane_manifest = serde_json::json!([{
            "Config": config_member,
            "RepoTags": [APP_IMAGE],
            "Layers": layer_names,
        }]);
        std::fs::write(
            staging.join("manifest.json"),
            serde_json::to_vec(&crane_manifest)?,
        )?;
        run(Command::new("tar")
            .arg("-C")
            .arg(&staging)
            .arg("-cf")
            .arg(self.out_path("crane-style.tar"))
            .args(&members))?;
        self.record(
            "crane-style",
            "crane-style.tar",
            "oci-attest-tests (crane legacy tarball layout: sha256:<hex> config, <hex>.tar.gz layers)",
        )
    }

    fn save_with_docker(&mut self) -> anyhow::Result<()> {
        let docker = || self.daemons.docker();
        run(docker()
            .arg("load")
            .arg("-i")
            .arg(self.out_path("podman-multi.tar")))?;

        let mut save = docker();
        save.args(["save", "-o"])
            .arg(self.out_path("docker-save.tar"))
            .arg(APP_IMAGE);
        self.save("docker-save", "docker-save.tar", save)?;
        self.ensure_symlinked_layer("docker-save.tar")?;

        let image_id =
            stdout_of(docker().args(["image", "inspect", "--format", "{{.Id}}", APP_IMAGE]))?;
        let mut save = docker();
        save.args(["save", "-o"])
            .arg(self.out_path("docker-save-by-id.tar"))
            .arg(&image_id);
        self.save("docker-save-by-id", "docker-save-by-id.tar", save)?;

        let mut save = docker();
        save.args(["save", "-o"])
            .arg(self.out_path("docker-save-multi.tar"))
            .args([APP_IMAGE, OTHER_IMAGE, THIRD_IMAGE]);
        self.save("docker-save-multi", "docker-save-multi.tar", save)?;

        let mut pipeline = Command::new("bash");
        pipeline
            .args([
                "-euo",
                "pipefail",
                "-c",
                r#"docker save "$1" | gzip > "$2""#,
                "bash",
                APP_IMAGE,
            ])
            .arg(self.out_path("docker-save.tar.gz"))
            .env("DOCKER_HOST", &self.daemons.docker_host)
            .env("PATH", crate::paths::search_path());
        self.save("docker-save-gzip", "docker-save.tar.gz", pipeline)
    }

    /// docker 20.10 dedups a repeated layer with a symlink member; the fixture exists for that.
    fn ensure_symlinked_layer(&self, relative: &str) -> anyhow::Result<()> {
        let listing = stdout_of(Command::new("tar").arg("-tvf").arg(self.out_path(relative)))?;
        ensure!(
            listing
                .lines()
                .any(|line| line.starts_with('l') && line.contains("layer.tar ->")),
            "{relative}: docker did not write the repeated layer as a symlink:\n{listing}"
        );
        Ok(())
    }

    fn save_with_ctr(&mut self) -> anyhow::Result<()> {
        let ctr = || {
            let mut command = self.daemons.ctr();
            command.args(["-n", "oci-attest-fixtures"]);
            command
        };
        run(ctr()
            .args(["images", "import", "--no-unpack"])
            .arg(self.out_path("skopeo-docker.tar")))?;
        let mut export = ctr();
        export
            .args(["images", "export"])
            .arg(self.out_path("ctr-export.tar"))
            .arg(APP_IMAGE);
        self.save("ctr-export", "ctr-export.tar", export)
    }

    /// The tools' own view must agree with the computed expectations: podman's and docker's image
    /// IDs, and `skopeo inspect --raw` for the OCI manifests.
    fn cross_check_with_tools(&self) -> anyhow::Result<()> {
        let app = &self
            .fixtures
            .iter()
            .find(|fixture| fixture.name == APP_ARCHIVE)
            .context("app fixture missing")?
            .expect
            .images[0]
            .imageid;
        let podman_id = stdout_of(
            self.tool("podman")
                .args(["image", "inspect", "--format", "{{.Id}}", APP_IMAGE]),
        )?;
        let docker_id = stdout_of(
            self.daemons
                .docker()
                .args(["image", "inspect", "--format", "{{.Id}}", APP_IMAGE]),
        )?;
        ensure!(
            podman_id.trim_start_matches("sha256:") == app,
            "podman reports image id {podman_id}, expected {app}"
        );
        ensure!(
            docker_id.trim_start_matches("sha256:") == app,
            "docker reports image id {docker_id}, expected {app}"
        );
        for (name, reference) in [
            (
                "skopeo-oci-archive",
                format!("oci-archive:{}", self.out_path("skopeo-oci.tar").display()),
            ),
            (
                "skopeo-oci-layout-dir",
                format!("oci:{}:1", self.out_path("oci-layout").display()),
            ),
        ] {
            let digest = sh(r#"skopeo inspect --raw "$1" | sha256sum"#, [reference])?;
            let expected = &self
                .fixtures
                .iter()
                .find(|fixture| fixture.name == name)
                .with_context(|| format!("fixture {name} missing"))?
                .expect
                .manifestdigest;
            if first_hex_word(&digest).as_ref() != Some(expected) {
                bail!("{name}: skopeo inspect --raw hashes to {digest}, expected {expected}");
            }
        }
        Ok(())
    }
}
