//! Finding the CUDA libraries at run time. The driver (`libcuda`) comes with the NVIDIA driver
//! and is normally on the loader path; NVRTC and cuBLAS come with a CUDA toolkit or pip wheels
//! and often are not. faaswap searches the usual places and pre-loads each library by absolute
//! path, so cudarc's later lookup by soname finds the copy already loaded.

use std::path::{Path, PathBuf};

/// A library faaswap needs: its soname prefix and what provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lib {
    /// File name prefix, e.g. `libnvrtc.so.13`.
    pub file: &'static str,
    pub provides: &'static str,
}

/// In load order: NVRTC's builtins before NVRTC, cuBLASLt before cuBLAS.
pub const LIBS: [Lib; 5] = [
    Lib { file: "libcuda.so.1", provides: "the NVIDIA driver" },
    Lib { file: "libnvrtc-builtins.so.13", provides: "CUDA 13 NVRTC (toolkit, or pip nvidia-cuda-nvrtc)" },
    Lib { file: "libnvrtc.so.13", provides: "CUDA 13 NVRTC (toolkit, or pip nvidia-cuda-nvrtc)" },
    Lib { file: "libcublasLt.so.13", provides: "CUDA 13 cuBLAS (toolkit, or pip nvidia-cublas)" },
    Lib { file: "libcublas.so.13", provides: "CUDA 13 cuBLAS (toolkit, or pip nvidia-cublas)" },
];

/// The environment variable that names an extra folder to search first.
pub const DIR_VAR: &str = "FAASWAP_CUDA_LIB_DIR";

/// Folders to search, most specific first: `$FAASWAP_CUDA_LIB_DIR`, `$CUDA_HOME` and
/// `$CUDA_PATH`, `/usr/local/cuda*`, the driver's usual folders, then pip wheels' `nvidia/*/lib`
/// under the active virtual environment and the system's Python folders.
pub fn search_dirs(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = env(DIR_VAR) {
        dirs.push(PathBuf::from(d));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(d) = env(var) {
            dirs.push(Path::new(&d).join("lib64"));
            dirs.push(Path::new(&d).join("lib"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    let mut versioned = glob_dirs(Path::new("/usr/local"), |n| n.starts_with("cuda-"));
    versioned.sort();
    dirs.extend(versioned.into_iter().rev().map(|d| d.join("lib64")));
    dirs.extend(["/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"].map(PathBuf::from));
    let mut pythons = Vec::new();
    if let Some(venv) = env("VIRTUAL_ENV") {
        pythons.push(PathBuf::from(venv).join("lib"));
    }
    if let Some(home) = env("HOME") {
        pythons.push(Path::new(&home).join(".local/lib"));
    }
    pythons.extend(["/usr/local/lib", "/usr/lib"].map(PathBuf::from));
    for base in pythons {
        for py in glob_dirs(&base, |n| n.starts_with("python3")) {
            for packages in ["site-packages", "dist-packages"] {
                let nvidia = py.join(packages).join("nvidia");
                let mut wheels = glob_dirs(&nvidia, |_| true);
                wheels.sort();
                dirs.extend(wheels.into_iter().map(|w| w.join("lib")));
            }
        }
    }
    dirs
}

fn glob_dirs(base: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    entries(base, keep).into_iter().filter(|p| p.is_dir()).collect()
}

fn glob_files(base: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    entries(base, keep).into_iter().filter(|p| p.is_file()).collect()
}

/// The entries of `base` whose names `keep` accepts (none when it cannot be read).
fn entries(base: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else { return Vec::new() };
    entries.filter_map(Result::ok).filter(|e| e.file_name().to_str().is_some_and(&keep)).map(|e| e.path()).collect()
}

/// The first file in `dirs` whose name is `lib.file` or starts with it followed by `.`
/// (`libnvrtc-builtins.so.13.0` for `libnvrtc-builtins.so.13`).
pub fn find(lib: &Lib, dirs: &[PathBuf]) -> Option<PathBuf> {
    for dir in dirs {
        let exact = dir.join(lib.file);
        if exact.is_file() {
            return Some(exact);
        }
        let mut versioned: Vec<PathBuf> = glob_files(dir, |n| {
            n.strip_prefix(lib.file).is_some_and(|rest| rest.starts_with('.') && !n.contains(".alt."))
        });
        versioned.sort();
        if let Some(p) = versioned.pop() {
            return Some(p);
        }
    }
    None
}

/// What to tell the user when `lib` was found nowhere.
pub fn missing_message(lib: &Lib, dirs: &[PathBuf]) -> String {
    let searched: Vec<String> = dirs.iter().filter(|d| d.is_dir()).map(|d| d.display().to_string()).collect();
    format!(
        "the CUDA back end needs {} ({}), which was not found on the loader path or in: {}; set {DIR_VAR} \
         (or CUDA_HOME) to the folder that holds it, or use --devices cpu",
        lib.file,
        lib.provides,
        if searched.is_empty() { "no existing folder".to_string() } else { searched.join(", ") }
    )
}

/// Where each library will be loaded from (`None`: by soname from the loader path). NVRTC
/// loads its builtins by exact version, so they are taken from NVRTC's own folder first.
pub fn plan(libs: &[Lib], dirs: &[PathBuf]) -> Vec<(Lib, Option<PathBuf>)> {
    let nvrtc_dir = find(&LIBS[2], dirs).and_then(|p| p.parent().map(Path::to_path_buf));
    libs.iter()
        .map(|lib| {
            let found = match (&nvrtc_dir, lib.file.starts_with("libnvrtc-builtins")) {
                (Some(d), true) => find(lib, std::slice::from_ref(d)).or_else(|| find(lib, dirs)),
                _ => find(lib, dirs),
            };
            (*lib, found)
        })
        .collect()
}

/// Loads every library: by absolute path when the search folders have it, else by soname
/// from the loader path. Loaded libraries stay loaded for the life of the process.
pub fn load_all() -> Result<Vec<String>, String> {
    load_libs(&LIBS)
}

/// Only the compiler (CI compiles the kernels with NVRTC on machines without a GPU).
pub fn load_nvrtc() -> Result<Vec<String>, String> {
    load_libs(&LIBS[1..3])
}

fn load_libs(libs: &[Lib]) -> Result<Vec<String>, String> {
    let dirs = search_dirs(&|k| std::env::var(k).ok());
    plan(libs, &dirs).iter().map(|(lib, path)| load(lib, path.as_deref(), &dirs)).collect()
}

fn load(lib: &Lib, path: Option<&Path>, dirs: &[PathBuf]) -> Result<String, String> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    let open = |name: &std::ffi::OsStr| {
        // SAFETY: these are the CUDA libraries, whose initialisers have no preconditions; the
        // handle is leaked so the library stays loaded while cudarc uses its symbols.
        unsafe { Library::open(Some(name), RTLD_NOW | RTLD_GLOBAL) }.map(std::mem::forget)
    };
    if let Some(path) = path {
        if open(path.as_os_str()).is_ok() {
            return Ok(path.display().to_string());
        }
    }
    if open(std::ffi::OsStr::new(lib.file)).is_ok() {
        return Ok(lib.file.to_string());
    }
    Err(missing_message(lib, dirs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_versioned_files_and_skips_alternates() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("nvidia/cu13/lib");
        std::fs::create_dir_all(&lib).unwrap();
        for f in ["libnvrtc-builtins.alt.so.13.0", "libnvrtc-builtins.so.13.0", "libnvrtc.so.13"] {
            std::fs::write(lib.join(f), b"").unwrap();
        }
        let dirs = vec![dir.path().join("missing"), lib.clone()];
        assert_eq!(find(&LIBS[1], &dirs), Some(lib.join("libnvrtc-builtins.so.13.0")));
        assert_eq!(find(&LIBS[2], &dirs), Some(lib.join("libnvrtc.so.13")));
        assert_eq!(find(&LIBS[4], &dirs), None);
        let msg = missing_message(&LIBS[4], &dirs);
        assert!(msg.contains("libcublas.so.13") && msg.contains(DIR_VAR), "{msg}");
        assert!(msg.contains(&lib.display().to_string()), "names the folders searched: {msg}");
    }

    #[test]
    fn nvrtc_builtins_come_from_nvrtcs_own_folder() {
        let root = tempfile::tempdir().unwrap();
        let (old, new) = (root.path().join("old"), root.path().join("new"));
        std::fs::create_dir_all(&old).unwrap();
        std::fs::create_dir_all(&new).unwrap();
        // An earlier folder holds only older builtins; NVRTC and its own builtins sit later.
        std::fs::write(old.join("libnvrtc-builtins.so.13.0"), b"").unwrap();
        std::fs::write(new.join("libnvrtc-builtins.so.13.2"), b"").unwrap();
        std::fs::write(new.join("libnvrtc.so.13"), b"").unwrap();
        let dirs = vec![old.clone(), new.clone()];
        let planned = plan(&LIBS[1..3], &dirs);
        assert_eq!(planned[0].1, Some(new.join("libnvrtc-builtins.so.13.2")));
        assert_eq!(planned[1].1, Some(new.join("libnvrtc.so.13")));
        // Without NVRTC anywhere, builtins are found by the plain search.
        std::fs::remove_file(new.join("libnvrtc.so.13")).unwrap();
        assert_eq!(plan(&LIBS[1..2], &dirs)[0].1, Some(old.join("libnvrtc-builtins.so.13.0")));
    }

    #[test]
    fn search_order_puts_the_override_first_and_finds_wheels_in_the_venv() {
        let venv = tempfile::tempdir().unwrap();
        let wheel = venv.path().join("lib/python3.11/site-packages/nvidia/cu13/lib");
        std::fs::create_dir_all(&wheel).unwrap();
        let env = |k: &str| match k {
            DIR_VAR => Some("/opt/mine".to_string()),
            "CUDA_HOME" => Some("/opt/cuda".to_string()),
            "VIRTUAL_ENV" => Some(venv.path().display().to_string()),
            _ => None,
        };
        let dirs = search_dirs(&env);
        assert_eq!(dirs[0], PathBuf::from("/opt/mine"));
        assert_eq!(dirs[1], PathBuf::from("/opt/cuda/lib64"));
        assert!(dirs.contains(&wheel), "{dirs:?}");
    }
}
