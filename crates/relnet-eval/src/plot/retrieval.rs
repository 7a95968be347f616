//! The retrieval figure of the paper: one row per query, the query image then its nearest
//! neighbours in the gallery, each neighbour framed green when its class is the query's and red
//! when it is not.

use std::path::Path;

use plotters::prelude::*;
use relnet_core::Result;

use super::{FONT_FAMILY, render_png};

/// An image to show (RGB, `height x width`, row-major) and its class name.
#[derive(Clone, Debug)]
pub struct Thumb {
    pub rgb: Vec<u8>,
    pub height: usize,
    pub width: usize,
    pub class: String,
}

/// One row: the query and its neighbours, nearest first, each with whether its class matches.
#[derive(Clone, Debug)]
pub struct GridRow {
    pub query: Thumb,
    pub neighbours: Vec<(Thumb, bool)>,
}

/// Nearest-neighbour upscaling of an RGB image by an integer factor.
fn upscale(t: &Thumb, f: usize) -> Vec<u8> {
    let (h, w) = (t.height * f, t.width * f);
    let mut out = vec![0u8; h * w * 3];
    for y in 0..h {
        for x in 0..w {
            let s = ((y / f) * t.width + x / f) * 3;
            out[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&t.rgb[s..s + 3]);
        }
    }
    out
}

/// The figure's size for `rows` of `cols` neighbours of `side`-pixel images at `scale`.
pub fn grid_size(rows: usize, cols: usize, side: usize, scale: usize) -> (u32, u32) {
    let cell = side * scale + 12;
    ((110 + cell * (cols + 1)) as u32, (34 + (cell + 22) * rows) as u32)
}

/// Draws the rows into `path`: images upscaled so that the smaller side is at least 64 pixels,
/// the query framed black with its class, every neighbour framed green (same class) or red.
pub fn grid_png(path: &Path, rows: &[GridRow], title: &str) -> Result<()> {
    let side = rows.iter().map(|r| r.query.height.max(r.query.width)).max().unwrap_or(32);
    let cols = rows.iter().map(|r| r.neighbours.len()).max().unwrap_or(0);
    let scale = (64 + side - 1) / side.max(1);
    let cell = side * scale + 12;
    let (w, h) = grid_size(rows.len(), cols, side, scale);
    render_png(path, w, h, |area| {
        area.draw(&Text::new(title.to_string(), (10, 6), (FONT_FAMILY, 18)))?;
        for (r, row) in rows.iter().enumerate() {
            let top = 34 + (cell + 22) * r;
            area.draw(&Text::new(format!("query {}", r + 1), (8, (top + cell / 2 - 8) as i32), (FONT_FAMILY, 14)))?;
            let draw_cell = |col: usize,
                             t: &Thumb,
                             frame: RGBColor,
                             label: String|
             -> std::result::Result<(), Box<dyn std::error::Error>> {
                let x = 100 + col * cell + if col > 0 { 10 } else { 0 };
                let (iw, ih) = (t.width * scale, t.height * scale);
                let frame_box = [(x as i32, top as i32), ((x + iw + 8) as i32, (top + ih + 8) as i32)];
                area.draw(&Rectangle::new(frame_box, frame.filled()))?;
                let img = BitMapElement::<_, plotters::backend::RGBPixel>::with_owned_buffer(
                    ((x + 4) as i32, (top + 4) as i32),
                    (iw as u32, ih as u32),
                    upscale(t, scale),
                )
                .expect("buffer of the image's size");
                area.draw(&img)?;
                let short: String = label.chars().take(11).collect();
                area.draw(&Text::new(short, (x as i32, (top + ih + 10) as i32), (FONT_FAMILY, 12)))?;
                Ok(())
            };
            draw_cell(0, &row.query, BLACK, row.query.class.clone())?;
            for (i, (t, same)) in row.neighbours.iter().enumerate() {
                let colour = if *same { RGBColor(30, 170, 60) } else { RGBColor(215, 30, 30) };
                draw_cell(i + 1, t, colour, t.class.clone())?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_a_png_of_the_computed_size_with_green_and_red_frames() {
        let thumb =
            |v: u8, class: &str| Thumb { rgb: vec![v; 32 * 32 * 3], height: 32, width: 32, class: class.into() };
        let rows = vec![
            GridRow { query: thumb(10, "cat"), neighbours: vec![(thumb(20, "cat"), true), (thumb(30, "dog"), false)] },
            GridRow {
                query: thumb(40, "ship"),
                neighbours: vec![(thumb(50, "ship"), true), (thumb(60, "ship"), true)],
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.png");
        grid_png(&path, &rows, "test").unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), grid_size(2, 2, 32, 2));
        let has = |c: [u8; 3]| img.pixels().any(|p| p.0 == c);
        assert!(has([30, 170, 60]) && has([215, 30, 30]), "both frame colours drawn");
        assert!(has([10, 10, 10]) && has([60, 60, 60]), "the images are drawn");
    }
}
