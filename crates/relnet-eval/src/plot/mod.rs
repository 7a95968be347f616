//! Figures as PNG files, drawn with plotters: t-SNE scatter plots of features ([`tsne`]),
//! training curves of runs ([`metrics`]) and retrieval grids ([`retrieval`]).
//!
//! Text uses DejaVu Sans, embedded in the binary (`assets/`, its licence beside it), so a figure
//! looks the same on every machine and needs no system fonts. PNGs are written atomically.

pub mod bars;
pub mod metrics;
pub mod retrieval;
pub mod tsne;

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;
use relnet_core::{Error, Result};

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// The family name figures use for text.
pub const FONT_FAMILY: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if plotters::style::register_font(FONT_FAMILY, style, FONT).is_err() {
                panic!("the embedded font does not parse");
            }
        }
    });
}

/// Ten colours that stay apart (Tableau 10), then more from the HSL wheel.
pub fn class_colour(c: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    if c < TAB10.len() {
        let (r, g, b) = TAB10[c];
        return RGBColor(r, g, b);
    }
    let (r, g, b) = HSLColor(((c as f64) * 0.618_034) % 1.0, 0.65, 0.45).rgb();
    RGBColor(r, g, b)
}

/// An error of the drawing library as relnet's error, naming the figure.
pub(crate) fn draw_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: drawing the figure failed: {e}", path.display()))
}

/// Draws on a white `width x height` canvas with `draw` and writes it to `path` as a PNG.
pub fn render_png<F>(path: &Path, width: u32, height: u32, draw: F) -> Result<()>
where
    F: FnOnce(
        &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    ) -> std::result::Result<(), Box<dyn std::error::Error>>,
{
    register_font();
    let mut buf = vec![255u8; width as usize * height as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        area.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        draw(&area).map_err(|e| draw_err(path, e))?;
        area.present().map_err(|e| draw_err(path, e))?;
    }
    write_png(path, &buf, width, height)
}

/// Encodes an RGB buffer as PNG and writes it atomically.
pub fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<()> {
    use image::ImageEncoder;
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|e| draw_err(path, e))?;
    relnet_core::fsutil::write_atomic(path, &bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
pub(crate) mod testutil {
    /// Width, height and colour type of a PNG file, read back by an independent decoder.
    pub fn png_info(path: &std::path::Path) -> (u32, u32, usize) {
        let img = image::open(path).expect("a valid PNG");
        let distinct: std::collections::HashSet<[u8; 3]> = img.to_rgb8().pixels().map(|p| p.0).collect();
        (img.width(), img.height(), distinct.len())
    }
}
