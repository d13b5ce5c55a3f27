use std::{
    ffi::{OsStr, OsString},
    fmt,
    path::{Path, PathBuf},
};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::Error;

/// Where the Kubernetes client config was taken from, in the order it is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `--kubeconfig PATH`: an explicit flag always wins.
    Flag(PathBuf),
    /// The `KUBECONFIG` environment variable (a list of files, merged like kubectl does).
    Env(OsString),
    /// The pod's service account, found through `KUBERNETES_SERVICE_HOST`.
    InCluster,
    /// `~/.kube/config`, the last resort for a developer's shell.
    Home(PathBuf),
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Flag(p) => write!(f, "--kubeconfig {}", p.display()),
            ConfigSource::Env(v) => write!(f, "KUBECONFIG={}", v.to_string_lossy()),
            ConfigSource::InCluster => f.write_str("in-cluster service account"),
            ConfigSource::Home(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Picks the config source from what the process was given, without touching any file.
///
/// In-cluster comes before `~/.kube/config` (unlike `kube::Config::infer`) so that a pod
/// whose image happens to carry a home kubeconfig still uses its own service account.
pub fn choose_source(
    flag: Option<&Path>,
    kubeconfig_env: Option<&OsStr>,
    in_cluster_env: bool,
    home: Option<&Path>,
) -> Option<ConfigSource> {
    if let Some(path) = flag {
        return Some(ConfigSource::Flag(path.to_path_buf()));
    }
    if let Some(value) = kubeconfig_env.filter(|v| !v.is_empty()) {
        return Some(ConfigSource::Env(value.to_os_string()));
    }
    if in_cluster_env {
        return Some(ConfigSource::InCluster);
    }
    home.map(|h| ConfigSource::Home(h.join(".kube").join("config")))
}

/// A kube client config together with where it came from, for the start-up log line.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The config, ready for `kube::Client::try_from`.
    pub config: kube::Config,
    /// Where it was found.
    pub source: ConfigSource,
}

/// Loads the client config from the flag, the environment, the cluster or the home directory.
pub async fn load_config(flag: Option<&Path>) -> Result<LoadedConfig, Error> {
    let kubeconfig_env = std::env::var_os("KUBECONFIG");
    let in_cluster_env = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let source = choose_source(
        flag,
        kubeconfig_env.as_deref(),
        in_cluster_env,
        home.as_deref(),
    )
    .ok_or(Error::NoConfig)?;

    let described = source.to_string();
    let kubeconfig_error = |e| Error::Kubeconfig {
        path: described.clone(),
        source: e,
    };
    let config = match &source {
        ConfigSource::Flag(path) | ConfigSource::Home(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
            from_kubeconfig(kubeconfig)
                .await
                .map_err(kubeconfig_error)?
        }
        ConfigSource::Env(_) => {
            let kubeconfig = Kubeconfig::from_env()
                .map_err(kubeconfig_error)?
                .ok_or(Error::NoConfig)?;
            from_kubeconfig(kubeconfig)
                .await
                .map_err(kubeconfig_error)?
        }
        ConfigSource::InCluster => kube::Config::incluster().map_err(Error::InCluster)?,
    };
    Ok(LoadedConfig { config, source })
}

async fn from_kubeconfig(
    kubeconfig: Kubeconfig,
) -> Result<kube::Config, kube::config::KubeconfigError> {
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_over_everything() {
        let got = choose_source(
            Some(Path::new("/etc/lab/kubeconfig")),
            Some(OsStr::new("/other")),
            true,
            Some(Path::new("/root")),
        );
        assert_eq!(got, Some(ConfigSource::Flag("/etc/lab/kubeconfig".into())));
    }

    #[test]
    fn env_before_in_cluster() {
        let got = choose_source(
            None,
            Some(OsStr::new("/a:/b")),
            true,
            Some(Path::new("/root")),
        );
        assert_eq!(got, Some(ConfigSource::Env("/a:/b".into())));
    }

    #[test]
    fn empty_env_is_ignored() {
        let got = choose_source(None, Some(OsStr::new("")), true, None);
        assert_eq!(got, Some(ConfigSource::InCluster));
    }

    #[test]
    fn in_cluster_before_home() {
        let got = choose_source(None, None, true, Some(Path::new("/root")));
        assert_eq!(got, Some(ConfigSource::InCluster));
    }

    #[test]
    fn home_is_the_last_resort() {
        let got = choose_source(None, None, false, Some(Path::new("/home/op")));
        assert_eq!(
            got,
            Some(ConfigSource::Home("/home/op/.kube/config".into()))
        );
        assert_eq!(choose_source(None, None, false, None), None);
    }

    #[test]
    fn display_names_the_source() {
        assert_eq!(
            ConfigSource::Flag("/k".into()).to_string(),
            "--kubeconfig /k"
        );
        assert_eq!(
            ConfigSource::InCluster.to_string(),
            "in-cluster service account"
        );
    }
}
