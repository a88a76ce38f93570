//! The committed header ffi/include/pgbroker.h is what cbindgen makes of the current source.
//! `PGBROKER_BLESS=1 cargo test -p pgbroker-ffi --test header` rewrites it.

use std::path::Path;

#[test]
fn committed_header_matches_the_source() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let fresh = String::from_utf8(fresh).expect("header is UTF-8");
    let path = dir.join("include/pgbroker.h");
    if std::env::var("PGBROKER_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &fresh).expect("writing the header");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "ffi/include/pgbroker.h is out of date with ffi/src: run \
         `PGBROKER_BLESS=1 cargo test -p pgbroker-ffi --test header` and commit it"
    );
}
