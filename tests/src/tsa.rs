//! A real RFC 3161 timestamp authority for the tests: a test PKI made with the `openssl` CLI
//! (a root, the TSA's certificate with the critical timeStamping EKU alone, and certificates the
//! same root issued for other purposes), and `openssl ts -reply` served over HTTP on 127.0.0.1 by
//! the `tsa-http` binary, stopped by pid when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use crate::command::run;
use crate::daemons::Daemon;

/// The TSA policy the authority names when the request names none.
pub const POLICY: &str = "1.2.3.4.1";

/// Extensions of the test certificates: the root, the TSA, and certificates a TSA must not use.
const EXTENSIONS: &str = "[req]
distinguished_name=dn
[dn]
[ext_root]
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
[ext_tsa]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,nonRepudiation
extendedKeyUsage=critical,timeStamping
subjectKeyIdentifier=hash
[ext_noncritical]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,nonRepudiation
extendedKeyUsage=timeStamping
[ext_multipurpose]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,nonRepudiation
extendedKeyUsage=critical,timeStamping,serverAuth
[ext_noeku]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,nonRepudiation
";

/// Certificates the root issues besides the TSA's, named after their extension section.
pub const MISISSUED: [&str; 3] = ["noncritical", "multipurpose", "noeku"];

/// The authority: its PKI under `dir` and its HTTP server.
pub struct Tsa {
    dir: tempfile::TempDir,
    server: Daemon,
    pub url: String,
}

impl Tsa {
    /// Makes the PKI and starts `server` (the `tsa-http` binary's path).
    pub fn start(server: &Path) -> anyhow::Result<Tsa> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        std::fs::write(d.join("ext.cnf"), EXTENSIONS)?;
        let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(d));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-days",
            "3650",
            "-subj",
            "/CN=oci-attest test TSA root",
            "-extensions",
            "ext_root",
            "-config",
            "ext.cnf",
        ])?;
        for name in std::iter::once("tsa").chain(MISISSUED) {
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            openssl(&[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN=oci-attest test {name}"),
                "-config",
                "ext.cnf",
            ])?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "root.pem",
                "-CAkey",
                "root.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "3650",
                "-extfile",
                "ext.cnf",
                "-extensions",
                &format!("ext_{name}"),
            ])?;
        }
        std::fs::write(d.join("serial"), "01\n")?;
        std::fs::write(
            d.join("tsa.cnf"),
            format!(
                "[ tsa ]\ndefault_tsa = tsa_config\n[ tsa_config ]\ndir = {dir}\nserial = $dir/serial\n\
                 crypto_device = builtin\nsigner_cert = $dir/tsa.pem\nsigner_key = $dir/tsa.key\n\
                 signer_digest = sha256\ndefault_policy = {POLICY}\nother_policies = 1.2.3.4.5\n\
                 digests = sha256, sha384, sha512\naccuracy = secs:1\nordering = no\ntsa_name = yes\n\
                 ess_cert_id_chain = no\ness_cert_id_alg = sha256\n",
                dir = d.display()
            ),
        )?;
        let port_file = d.join("port");
        let mut command = Command::new(server);
        command.arg(d.join("tsa.cnf")).arg(&port_file);
        let mut server = Daemon::spawn("tsa-http", command, d.join("tsa-http.log"))?;
        server.wait_ready(|| port_file.is_file())?;
        let port = std::fs::read_to_string(&port_file)
            .with_context(|| format!("cannot read {}", port_file.display()))?;
        Ok(Tsa {
            url: format!("http://127.0.0.1:{}/", port.trim()),
            dir,
            server,
        })
    }

    /// A file of the PKI: `root.pem`, `tsa.pem`, `<name>.pem`, `<name>.key`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Tsa {
    fn drop(&mut self) {
        if let Err(error) = self.server.stop() {
            eprintln!("stopping the test TSA: {error:#}");
        }
    }
}
