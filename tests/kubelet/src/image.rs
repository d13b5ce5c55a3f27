//! Which program an image name stands for in the lab, and the argv a container runs.
//!
//! There is no container engine and no registry: an image is only a name that maps to a
//! binary built from this workspace. Everything here is pure.

/// How the lab's echo server is started for an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoMode {
    /// `ferrolb-echo http`
    Http,
    /// `ferrolb-echo tcp`
    Tcp,
    /// `ferrolb-echo udp`
    Udp,
}

impl EchoMode {
    fn arg(self) -> &'static str {
        match self {
            EchoMode::Http => "http",
            EchoMode::Tcp => "tcp",
            EchoMode::Udp => "udp",
        }
    }

    /// Which `containerPort` protocol the echo listens on in this mode.
    fn protocol(self) -> &'static str {
        match self {
            EchoMode::Udp => "UDP",
            EchoMode::Http | EchoMode::Tcp => "TCP",
        }
    }
}

/// What an image stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// The lab echo server in one of its modes; the image's own command is ignored.
    Echo(EchoMode),
    /// A workspace binary that is the image's entrypoint (FerroLB's own images).
    Binary(&'static str),
}

/// The echo binary built from `tests/echo`.
pub const ECHO_BINARY: &str = "ferrolb-echo";

/// Images that are the echo server, by repository (registry and path, no tag or digest).
const ECHO_IMAGES: &[(&str, EchoMode)] = &[
    ("ferrolb.io/lab/echo", EchoMode::Http),
    ("ferrolb.io/lab/tcp-echo", EchoMode::Tcp),
    ("ferrolb.io/lab/udp-echo", EchoMode::Udp),
    // The Gateway API conformance suite's backend.
    ("gcr.io/k8s-staging-gateway-api/echo-basic", EchoMode::Http),
    ("registry.k8s.io/gateway-api/echo-basic", EchoMode::Http),
    // The Ingress conformance suite's backend (kubernetes-sigs/ingress-controller-conformance).
    (
        "gcr.io/k8s-staging-ingressconformance/echoserver",
        EchoMode::Http,
    ),
    (
        "registry.k8s.io/ingressconformance/echoserver",
        EchoMode::Http,
    ),
    ("k8s.gcr.io/ingressconformance/echoserver", EchoMode::Http),
];

/// Workspace binaries an image maps to by its last path segment, from any registry.
const BINARY_IMAGES: &[&str] = &[
    "ferrolb-controller",
    "ferrolb-speaker",
    "ferrolb-ingress",
    ECHO_BINARY,
];

/// Why a container cannot run in the lab.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The image maps to nothing the workspace builds.
    #[error(
        "image {image:?} is not available in the FerroLB lab (no registry or container engine); known images: {}",
        known_images()
    )]
    NotInLab {
        /// The image as written in the Pod.
        image: String,
    },
    /// `command[0]` is a program the image does not contain.
    #[error(
        "image {image:?} only contains {binary}; command {command:?} cannot run in the FerroLB lab"
    )]
    CommandNotInImage {
        /// The image as written in the Pod.
        image: String,
        /// The binary the image holds.
        binary: &'static str,
        /// The command that was asked for.
        command: String,
    },
}

impl ImageError {
    /// The `containerStatuses[].state.waiting.reason` for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::NotInLab { .. } => "ImageNotInLab",
            ImageError::CommandNotInImage { .. } => "CommandNotInImage",
        }
    }
}

/// A readable list of the images the lab knows, for error messages.
pub fn known_images() -> String {
    let mut names: Vec<String> = ECHO_IMAGES.iter().map(|(r, _)| (*r).to_string()).collect();
    names.extend(BINARY_IMAGES.iter().map(|b| format!("<any registry>/{b}")));
    names.join(", ")
}

/// The repository part of an image reference: without `@digest` and without `:tag`.
pub fn repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    // A ':' before the last '/' is a registry port, not a tag.
    match image.rfind(':') {
        Some(colon) if image.rfind('/').is_none_or(|slash| colon > slash) => &image[..colon],
        _ => image,
    }
}

/// What `image` stands for in the lab, if anything.
pub fn program(image: &str) -> Option<Program> {
    let repo = repository(image);
    if let Some((_, mode)) = ECHO_IMAGES.iter().find(|(r, _)| *r == repo) {
        return Some(Program::Echo(*mode));
    }
    let base = repo.rsplit('/').next().unwrap_or(repo);
    BINARY_IMAGES
        .iter()
        .find(|b| **b == base)
        .map(|b| Program::Binary(b))
}

/// A declared container port: number and protocol (`TCP`, `UDP`, `SCTP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// `containerPort`
    pub number: i32,
    /// `protocol`, `TCP` when unset
    pub protocol: String,
}

/// The program (a binary name, looked up in the kubelet's `--bin-dir`) and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// A binary name in the bin dir.
    pub binary: &'static str,
    /// Its arguments.
    pub args: Vec<String>,
}

/// The argv for a container, with kubelet semantics: `command` replaces the entrypoint,
/// `args` are appended. `command` and `args` must already have `$(VAR)` expanded.
pub fn launch(
    image: &str,
    command: &[String],
    args: &[String],
    ports: &[Port],
) -> Result<Launch, ImageError> {
    match program(image) {
        None => Err(ImageError::NotInLab {
            image: image.to_string(),
        }),
        Some(Program::Echo(mode)) => {
            let mut argv = vec![mode.arg().to_string()];
            for port in ports.iter().filter(|p| p.protocol == mode.protocol()) {
                argv.push("--port".to_string());
                argv.push(port.number.to_string());
            }
            argv.extend(args.iter().cloned());
            Ok(Launch {
                binary: ECHO_BINARY,
                args: argv,
            })
        }
        Some(Program::Binary(binary)) => {
            let mut argv = Vec::new();
            if let Some((first, rest)) = command.split_first() {
                // The image holds only its binary, at some path: `/ferrolb-speaker`,
                // `/usr/local/bin/ferrolb-speaker` or plain `ferrolb-speaker`.
                if first.rsplit('/').next() != Some(binary) {
                    return Err(ImageError::CommandNotInImage {
                        image: image.to_string(),
                        binary,
                        command: first.clone(),
                    });
                }
                argv.extend(rest.iter().cloned());
            }
            argv.extend(args.iter().cloned());
            Ok(Launch { binary, args: argv })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn tcp(n: i32) -> Port {
        Port {
            number: n,
            protocol: "TCP".into(),
        }
    }

    #[test]
    fn repository_strips_tag_and_digest_but_not_registry_port() {
        assert_eq!(repository("ferrolb.io/lab/echo"), "ferrolb.io/lab/echo");
        assert_eq!(repository("ferrolb.io/lab/echo:v1"), "ferrolb.io/lab/echo");
        assert_eq!(
            repository("registry.k8s.io/gateway-api/echo-basic:v1.2@sha256:abcd"),
            "registry.k8s.io/gateway-api/echo-basic"
        );
        assert_eq!(
            repository("localhost:5000/ferrolb-speaker"),
            "localhost:5000/ferrolb-speaker"
        );
        assert_eq!(
            repository("localhost:5000/ferrolb-speaker:dev"),
            "localhost:5000/ferrolb-speaker"
        );
    }

    #[test]
    fn images_map_to_programs() {
        use EchoMode::*;
        let cases = [
            ("ferrolb.io/lab/echo", Some(Program::Echo(Http))),
            ("ferrolb.io/lab/tcp-echo:latest", Some(Program::Echo(Tcp))),
            ("ferrolb.io/lab/udp-echo", Some(Program::Echo(Udp))),
            (
                "gcr.io/k8s-staging-gateway-api/echo-basic:v20240412-v1.1.0",
                Some(Program::Echo(Http)),
            ),
            (
                "registry.k8s.io/gateway-api/echo-basic@sha256:0123",
                Some(Program::Echo(Http)),
            ),
            (
                "gcr.io/k8s-staging-ingressconformance/echoserver:v20221109-7ee2f3e",
                Some(Program::Echo(Http)),
            ),
            (
                "ghcr.io/ferrolb/ferrolb-controller:0.1.0",
                Some(Program::Binary("ferrolb-controller")),
            ),
            ("ferrolb-speaker", Some(Program::Binary("ferrolb-speaker"))),
            (
                "quay.io/x/ferrolb-ingress@sha256:00",
                Some(Program::Binary("ferrolb-ingress")),
            ),
            ("nginx:1.27", None),
            ("ferrolb.io/lab/echo-extra", None),
            ("evil.example/lab/echo", None),
        ];
        for (image, want) in cases {
            assert_eq!(program(image), want, "{image}");
        }
    }

    #[test]
    fn echo_gets_its_mode_and_matching_ports() {
        let ports = [
            tcp(8080),
            tcp(8443),
            Port {
                number: 5353,
                protocol: "UDP".into(),
            },
        ];
        let l = launch("ferrolb.io/lab/echo", &s(&["/bin/ignored"]), &[], &ports).unwrap();
        assert_eq!(l.binary, "ferrolb-echo");
        assert_eq!(l.args, s(&["http", "--port", "8080", "--port", "8443"]));
        let l = launch("ferrolb.io/lab/udp-echo", &[], &[], &ports).unwrap();
        assert_eq!(l.args, s(&["udp", "--port", "5353"]));
        let l = launch("ferrolb.io/lab/tcp-echo", &[], &[], &[]).unwrap();
        assert_eq!(l.args, s(&["tcp"]));
    }

    #[test]
    fn ferrolb_images_take_command_and_args() {
        let l = launch("x/ferrolb-speaker:1", &[], &s(&["--node-name", "n1"]), &[]).unwrap();
        assert_eq!(
            l,
            Launch {
                binary: "ferrolb-speaker",
                args: s(&["--node-name", "n1"])
            }
        );
        let l = launch(
            "x/ferrolb-speaker:1",
            &s(&["/usr/local/bin/ferrolb-speaker", "--log=json"]),
            &s(&["--node-name", "n1"]),
            &[],
        )
        .unwrap();
        assert_eq!(l.args, s(&["--log=json", "--node-name", "n1"]));
        let err = launch("x/ferrolb-speaker:1", &s(&["/bin/sh", "-c", "x"]), &[], &[]).unwrap_err();
        assert_eq!(err.reason(), "CommandNotInImage");
    }

    #[test]
    fn unknown_image_names_the_image_and_the_known_ones() {
        let err = launch("nginx:1.27", &[], &[], &[]).unwrap_err();
        assert_eq!(err.reason(), "ImageNotInLab");
        let msg = err.to_string();
        assert!(msg.contains("\"nginx:1.27\""), "{msg}");
        assert!(msg.contains("ferrolb.io/lab/echo"), "{msg}");
        assert!(msg.contains("ferrolb-controller"), "{msg}");
    }
}
