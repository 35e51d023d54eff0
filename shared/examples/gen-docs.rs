//! Write the client contract's documents (shared/schema/: JSON Schema, AsyncAPI,
//! OpenAPI) from the types of `bandsync::wire`. The `wire::docs` tests fail until they
//! match the code again.

use anyhow::Context as _;
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, text) in bandsync::wire::docs::documents() {
        let file = root.join(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&file, &text).with_context(|| format!("writing {}", file.display()))?;
        println!("{path}: {} bytes", text.len());
    }
    Ok(())
}
