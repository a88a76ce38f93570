//! Certificates for the TLS tests, made with the `openssl` command: a CA, a server
//! certificate for `localhost` and `127.0.0.1`, a client certificate for user `certuser`,
//! and a second CA that signed nothing the server shows.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn make() -> Certs {
        let dir = std::env::temp_dir().join(format!("pgbroker-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ca(&dir, "ca");
        ca(&dir, "other-ca");
        signed(
            &dir,
            "server",
            "localhost",
            Some("subjectAltName=DNS:localhost,IP:127.0.0.1"),
        );
        signed(&dir, "client", "certuser", None);
        Certs { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

fn ca(dir: &Path, name: &str) {
    let (key, crt, subj) = (
        format!("{name}.key"),
        format!("{name}.crt"),
        format!("/CN=pgbroker test {name}"),
    );
    let mut args = vec![
        "req", "-x509", "-nodes", "-days", "2", "-subj", &subj, "-keyout", &key, "-out", &crt,
    ];
    args.extend(KEY);
    args.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &args);
}

fn signed(dir: &Path, name: &str, cn: &str, ext: Option<&str>) {
    let (key, csr, crt, subj) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("/CN={cn}"),
    );
    let mut args = vec![
        "req", "-new", "-nodes", "-subj", &subj, "-keyout", &key, "-out", &csr,
    ];
    args.extend(KEY);
    openssl(dir, &args);
    let ext_file = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext_file),
        ext.unwrap_or("basicConstraints=CA:FALSE"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &crt,
            "-extfile",
            &ext_file,
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join(&key), std::fs::Permissions::from_mode(0o600)).unwrap();
}
