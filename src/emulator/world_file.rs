//! The embedded emulator's world kept between runs (`endpoint: embedded`): every process starts
//! its own emulator, so without this file `plan --refresh` after `apply` would read a world in
//! which no mark was ever set. One JSON file beside the state, written atomically after every
//! change; a damaged one is an error naming it, never a fresh world.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::world::World;

/// The layout's version; a file of another version is refused.
const FORMAT_VERSION: u32 = 1;

/// What the file holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorldFile {
    format_version: u32,
    /// The app whose world this is: a config for another app does not read it.
    sdkappid: u64,
    world: World,
}

/// Where the embedded emulator of a config with this state path keeps its world:
/// `<state>.emulator.json`, beside the state.
pub fn path_beside(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".emulator.json");
    PathBuf::from(name)
}

/// How an operator starts over: said by every refusal.
fn start_over(path: &Path) -> String {
    format!(
        "delete it to start the embedded emulator afresh (`rm {}`), and delete the state too (or \
         run `marksync import`), since the state records marks only that world held",
        path.display()
    )
}

fn refused(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {why}; {}", path.display(), start_over(path)),
    )
}

/// The world saved at `path` for `sdkappid` and the file's bytes: an empty world and no bytes
/// when there is no file yet.
pub(super) fn load(path: &Path, sdkappid: u64) -> io::Result<(World, Vec<u8>)> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((World::default(), Vec::new())),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ));
        }
    };
    let file: WorldFile = serde_json::from_slice(&bytes).map_err(|e| {
        refused(
            path,
            format_args!(
                "not an emulator world file (damaged at line {} column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    if file.format_version != FORMAT_VERSION {
        return Err(refused(
            path,
            format_args!(
                "world file version {} (this marksync reads {FORMAT_VERSION})",
                file.format_version
            ),
        ));
    }
    if file.sdkappid != sdkappid {
        return Err(refused(
            path,
            format_args!(
                "the world of app {}, not of the configured sdkappid {sdkappid}",
                file.sdkappid
            ),
        ));
    }
    Ok((file.world, bytes))
}

/// The file's bytes for `world`.
pub(super) fn render(world: &World, sdkappid: u64) -> Vec<u8> {
    #[derive(Serialize)]
    struct Borrowed<'a> {
        format_version: u32,
        sdkappid: u64,
        world: &'a World,
    }
    let mut out = serde_json::to_vec(&Borrowed {
        format_version: FORMAT_VERSION,
        sdkappid,
        world,
    })
    .expect("the world serializes");
    out.push(b'\n');
    out
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same directory, synced, then
/// renamed over it. Creates the directory (the state's, before the state's first save).
pub(super) fn save(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_world_round_trips_and_a_damaged_or_foreign_file_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_beside(&dir.path().join("state/marksync.json"));
        assert!(path.ends_with("state/marksync.json.emulator.json"));
        assert!(load(&path, 7).unwrap().0.view(None, 0).is_empty());
        let mut world = World::default();
        world
            .create_group("@TGS#a", super::super::GroupType::AVChatRoom)
            .unwrap();
        save(&path, &render(&world, 7)).unwrap();
        assert!(
            load(&path, 7)
                .unwrap()
                .0
                .view(None, 0)
                .contains_key("@TGS#a")
        );

        let other = load(&path, 8).unwrap_err().to_string();
        assert!(other.contains("the world of app 7"), "{other}");
        assert!(other.contains(&path.display().to_string()), "{other}");
        assert!(other.contains("delete it"), "{other}");

        std::fs::write(&path, "{\"format_version\":1,").unwrap();
        let damaged = load(&path, 7).unwrap_err().to_string();
        assert!(damaged.contains("not an emulator world file"), "{damaged}");
        assert!(damaged.contains("delete it"), "{damaged}");
    }
}
