//! `oci-attest inspect`: analyse one image archive and print the `oci` predicate or a table.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::attestors::oci;
use crate::exit::{failure, FailureKind};
use crate::gojson;
use crate::inspect::{self, image::Image, Analysis, DecompressionLimits, Options};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the `oci` predicate as JSON (exactly as it goes into an attestation).
    #[arg(long)]
    pub json: bool,
    /// Stop when all layers of the archive decompress to more than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DecompressionLimits::default().max_total_bytes)]
    pub max_decompressed_bytes: u64,
    /// Stop when a layer decompresses to more than this many times its stored size.
    #[arg(long, value_name = "RATIO", default_value_t = DecompressionLimits::default().max_ratio)]
    pub max_ratio: u64,
    /// Reject images with more layers than this.
    #[arg(long, value_name = "N", default_value_t = inspect::image::MAX_LAYERS)]
    pub max_layers: usize,
    /// The archive: docker-archive or OCI tar (optionally gzip-compressed) or OCI layout
    /// directory; `-` reads a tar from stdin.
    pub path: PathBuf,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let options = Options {
        limits: DecompressionLimits {
            max_total_bytes: args.max_decompressed_bytes,
            max_ratio: args.max_ratio,
        },
        max_layers: args.max_layers,
        progress: crate::progress::archive_bar(),
    };
    let analysis = if args.path == Path::new("-") {
        inspect::analyze_reader(&args.path, std::io::stdin().lock(), &options)
    } else {
        // A path that cannot be read is an I/O error, not a failed analysis (exit 1, not 5).
        std::fs::metadata(&args.path)
            .with_context(|| format!("{}: cannot read", args.path.display()))?;
        inspect::analyze(&args.path, &options)
    }
    .map_err(|error| failure(FailureKind::Analysis, error.to_string()))?;
    let text = if args.json {
        let mut json = gojson::to_vec(&oci::predicate(&analysis))?;
        json.push(b'\n');
        json
    } else {
        table(&analysis).into_bytes()
    };
    std::io::stdout().lock().write_all(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

fn image_lines(out: &mut String, number: usize, image: &Image) {
    use std::fmt::Write as _;
    let tags = image
        .tags
        .as_ref()
        .filter(|tags| !tags.is_empty())
        .map_or_else(|| "(none)".to_owned(), |tags| tags.join(", "));
    let platform = image.platform.as_ref().map_or_else(
        || "(unknown)".to_owned(),
        |platform| match &platform.variant {
            Some(variant) => format!("{}/{}/{variant}", platform.os, platform.architecture),
            None => format!("{}/{}", platform.os, platform.architecture),
        },
    );
    let _ = writeln!(out, "image {number}");
    let _ = writeln!(out, "  id        sha256:{}", image.config_sha256);
    let _ = writeln!(out, "  tags      {tags}");
    if let Some(manifest) = &image.manifest_sha256 {
        let _ = writeln!(out, "  manifest  sha256:{manifest}");
    }
    let _ = writeln!(out, "  platform  {platform}");
    let _ = writeln!(
        out,
        "  layers    {:>3}  {:<5} {:>14}  {:<14} diffID",
        "#", "comp", "size", "blob"
    );
    for (index, layer) in image.layers.iter().enumerate() {
        let _ = writeln!(
            out,
            "            {:>3}  {:<5} {:>14}  {:<14} sha256:{}",
            index,
            layer.compression.as_str(),
            layer.size,
            short(&layer.blob_sha256),
            layer.diff_id
        );
    }
}

fn table(analysis: &Analysis) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "archive   {}", analysis.path.display());
    let _ = writeln!(out, "format    {}", analysis.format());
    if let Some(hex) = &analysis.file_sha256 {
        let _ = writeln!(out, "sha256    {hex}");
    }
    for (index, image) in analysis.images.iter().enumerate() {
        image_lines(&mut out, index + 1, image);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::image::{Compression, Layer, Platform};

    #[test]
    fn table_lists_images_tags_platform_and_layers() {
        let image = Image {
            config_sha256: "c".repeat(64),
            tags: Some(vec!["app:1".into(), "app:latest".into()]),
            manifest_sha256: Some("m".repeat(64)),
            platform: Some(Platform {
                os: "linux".into(),
                architecture: "arm64".into(),
                variant: Some("v8".into()),
            }),
            layers: vec![Layer {
                media_type: None,
                compression: Compression::Zstd,
                blob_sha256: "b".repeat(64),
                size: 1234,
                diff_id: "d".repeat(64),
            }],
        };
        let analysis = Analysis {
            path: "x.tar".into(),
            file_sha256: Some("f".repeat(64)),
            docker: None,
            layout: Some(Vec::new()),
            images: vec![image],
        };
        let text = table(&analysis);
        let expected = format!(
            "archive   x.tar\nformat    oci-layout\nsha256    {f}\nimage 1\n  id        sha256:{c}\n  tags      app:1, app:latest\n  manifest  sha256:{m}\n  platform  linux/arm64/v8\n  layers      #  comp            size  blob           diffID\n              0  zstd            1234  bbbbbbbbbbbb   sha256:{d}\n",
            f = "f".repeat(64),
            c = "c".repeat(64),
            m = "m".repeat(64),
            d = "d".repeat(64)
        );
        assert_eq!(text, expected);
    }
}
