//! Prompt understanding: free text → [`SceneSpec`], deterministically.
//!
//! First stage of the reference pipeline (PLAN task). The parser reads the prompt word by
//! word and builds noun phrases: adjectives (count, colour, size, material, motion, spin)
//! accumulate until a noun closes them — a shape noun makes a group of bodies ("three red
//! balls"), a floor noun sets the floor ("on a wooden floor"), a background noun sets the
//! backdrop ("against a blue wall"). A motion word after a group applies to that group
//! ("a cube falling"). Camera, lighting and style words set scene-wide options.
//!
//! Nothing fails: unknown words are collected in [`SceneSpec::ignored`], adjectives that no
//! noun claims fall back to the last group, and a prompt without any shape gets one default
//! body. The tables of understood words are in [`vocabulary`] (listed by
//! [`vocabulary::vocabulary`]). The result feeds [`super::plan`] (physics) and is shown to
//! the user as the job's scene JSON.

pub mod vocabulary;

use serde::{Deserialize, Serialize};

use vocabulary::{lookup, COLOURS, COLOUR_MODIFIERS, COUNTS, SIZES};
pub use vocabulary::{Lighting, Material, Motion, Shape, Shot};

/// Most bodies in one scene: the arena (5 m × 3 m) holds a dozen without overlapping, and the
/// guide render's cost grows linearly with the count.
pub const MAX_OBJECTS: usize = 12;

/// Words of a prompt past this many are ignored (and reported): bounds the parser's work.
pub const MAX_WORDS: usize = 200;

/// A named colour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Colour {
    /// The words that produced it ("dark red"), or "default".
    pub name: String,
    /// Linear RGB in `[0, 1]`.
    pub rgb: [f32; 3],
}

/// One simulated body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectSpec {
    pub shape: Shape,
    pub colour: Colour,
    pub material: Material,
    /// Scale on the shape's base dimensions (1 = medium).
    pub size: f32,
    pub motion: Motion,
    /// Starts with an extra spin.
    pub spinning: bool,
}

/// The floor the bodies fall on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FloorSpec {
    pub material: Material,
    pub colour: Colour,
}

/// Everything understood from a prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneSpec {
    /// The bodies, main body first (the one the camera and the tests follow).
    pub objects: Vec<ObjectSpec>,
    pub floor: FloorSpec,
    /// Colour of the walls behind the scene.
    pub background: Colour,
    pub shot: Shot,
    pub lighting: Lighting,
    /// Style words, in prompt order.
    pub style: Vec<String>,
    /// Product of the style words' texture factors, within [`TEXTURE_SCALE_RANGE`].
    pub texture_scale: f32,
    /// Words that set something, in prompt order.
    pub understood: Vec<String>,
    /// Words the parser does not know, in prompt order.
    pub ignored: Vec<String>,
    /// Fallbacks taken ("no shape named: one red rubber ball"), for the user.
    pub notes: Vec<String>,
}

/// Adjectives collected since the last noun.
#[derive(Default)]
struct Pending {
    count: Option<u32>,
    colour: Option<Colour>,
    modifier: Option<(&'static str, [f32; 3], f32)>,
    size: Option<f32>,
    material: Option<Material>,
    motion: Option<Motion>,
    spinning: bool,
}

impl Pending {
    fn has_object_words(&self) -> bool {
        self.count.is_some()
            || self.colour.is_some()
            || self.size.is_some()
            || self.material.is_some()
            || self.motion.is_some()
            || self.spinning
    }
}

/// A group of identical bodies ("three red balls").
struct Group {
    count: u32,
    shape: Shape,
    colour: Option<Colour>,
    size: Option<f32>,
    material: Option<Material>,
    motion: Option<Motion>,
    spinning: bool,
}

/// Lower-cases, splits on anything but letters, digits and '-', joins two-word phrases.
fn tokenize(prompt: &str) -> Vec<String> {
    let raw: Vec<String> = prompt
        .to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .map(|w| w.trim_matches('-').to_string())
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let joined = match (raw[i].as_str(), raw.get(i + 1).map(String::as_str)) {
            ("close", Some("up")) => Some("closeup"),
            ("slow", Some("motion")) => Some("slow-motion"),
            _ => None,
        };
        match joined {
            Some(j) => {
                out.push(j.to_string());
                i += 2;
            }
            None => {
                out.push(match raw[i].as_str() {
                    "close-up" => "closeup".to_string(),
                    other => other.to_string(),
                });
                i += 1;
            }
        }
    }
    out
}

/// Singular form of a plural noun we know ("balls" → "ball", "boxes" → "box").
fn singular(word: &str) -> Option<&'static str> {
    let candidates = [word.strip_suffix("es"), word.strip_suffix('s')];
    candidates.into_iter().flatten().find_map(|stem| {
        vocabulary::SHAPE_WORDS
            .iter()
            .map(|(w, _)| *w)
            .chain(vocabulary::FLOOR_WORDS.iter().copied())
            .find(|w| *w == stem)
    })
}

/// A number word or digits ("3") as a count, capped at [`MAX_OBJECTS`].
fn count_of(word: &str) -> Option<u32> {
    lookup(COUNTS, word).or_else(|| {
        word.parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| n.min(MAX_OBJECTS as u32))
    })
}

/// Bounds of [`Scene::texture_scale`]: a few style words' worth either way (the factors
/// are 0.4..=1.8), however often a prompt repeats them.
pub const TEXTURE_SCALE_RANGE: std::ops::RangeInclusive<f32> = 0.1..=4.0;

/// Parses a prompt. Never fails; the same prompt always gives the same scene.
pub fn parse(prompt: &str) -> SceneSpec {
    let mut tokens = tokenize(prompt);
    let mut ignored = Vec::new();
    if tokens.len() > MAX_WORDS {
        ignored.extend(tokens.drain(MAX_WORDS..));
    }

    let mut groups: Vec<Group> = Vec::new();
    let mut pending = Pending::default();
    let mut understood = Vec::new();
    let mut floor_material: Option<Material> = None;
    let mut floor_colour: Option<Colour> = None;
    let mut background: Option<Colour> = None;
    let mut shot: Option<Shot> = None;
    let mut lighting: Option<Lighting> = None;
    let mut style = Vec::new();
    let mut texture_scale = 1.0f32;
    let mut after_on = false;

    for (i, word) in tokens.iter().enumerate() {
        let w = word.as_str();
        let next = tokens.get(i + 1).map(String::as_str);
        let next_is_colour = next.is_some_and(|n| lookup(COLOURS, n).is_some());
        let mut known = true;

        if let Some(shape) = vocabulary::lookup(vocabulary::SHAPE_WORDS, w)
            .or_else(|| singular(w).and_then(|s| lookup(vocabulary::SHAPE_WORDS, s)))
            .filter(|_| !(w == "marble" && next.is_some_and(is_surface_noun)))
        {
            let p = std::mem::take(&mut pending);
            groups.push(Group {
                count: p.count.unwrap_or(1),
                shape,
                colour: p.colour,
                size: p.size,
                material: p.material,
                motion: p.motion,
                spinning: p.spinning,
            });
        } else if is_surface_noun(w) || (after_on && is_floor_material(w)) {
            // A floor noun claims the material and colour said before it.
            if let Some(m) = lookup(vocabulary::MATERIAL_WORDS, w)
                .filter(|m| vocabulary::FLOOR_MATERIALS.contains(m))
            {
                floor_material = Some(m);
            }
            if let Some(m) = pending.material.take() {
                floor_material = Some(m);
            }
            if let Some(c) = pending.colour.take() {
                floor_colour = Some(c);
            }
            pending.count = None;
        } else if vocabulary::BACKGROUND_WORDS.contains(&w) {
            if let Some(c) = pending.colour.take() {
                background = Some(c);
            } else if w == "sky" {
                background = Some(Colour {
                    name: "sky".into(),
                    rgb: SKY_BLUE,
                });
            }
            if w == "studio" {
                lighting.get_or_insert(Lighting::Studio);
            }
            pending.count = None;
        } else if let Some(n) = count_of(w) {
            pending.count = Some(n);
            known = w != "a" && w != "an";
        } else if let Some(m) = COLOUR_MODIFIERS
            .iter()
            .find(|m| m.0 == w)
            .filter(|_| next_is_colour)
        {
            pending.modifier = Some(*m);
        } else if let Some(rgb) = lookup(COLOURS, w) {
            let colour = match pending.modifier.take() {
                Some((name, target, amount)) => Colour {
                    name: format!("{name} {w}"),
                    rgb: std::array::from_fn(|k| rgb[k] * (1.0 - amount) + target[k] * amount),
                },
                None => Colour {
                    name: w.to_string(),
                    rgb,
                },
            };
            pending.colour = Some(colour);
        } else if let Some(s) = lookup(SIZES, w) {
            pending.size = Some(s);
        } else if let Some(motion) = lookup(vocabulary::MOTION_WORDS, w) {
            attach_motion(&mut groups, &mut pending, Some(motion), false);
        } else if vocabulary::SPIN_WORDS.contains(&w) {
            attach_motion(&mut groups, &mut pending, None, true);
        } else if let Some(m) = lookup(vocabulary::MATERIAL_WORDS, w) {
            pending.material = Some(m);
        } else if let Some(s) = lookup(vocabulary::CAMERA_WORDS, w) {
            shot = Some(s);
        } else if let Some(l) = lookup(vocabulary::LIGHTING_WORDS, w) {
            lighting = Some(l);
        } else if let Some(f) = lookup(vocabulary::STYLE_WORDS, w) {
            style.push(w.to_string());
            texture_scale *= f;
        } else if vocabulary::CAMERA_NOUNS.contains(&w) || vocabulary::FILLER_WORDS.contains(&w) {
            known = false; // grammar: neither understood nor ignored
        } else {
            ignored.push(word.clone());
            known = false;
        }
        after_on = matches!(w, "on" | "onto" | "upon")
            || (after_on && !known && vocabulary::FILLER_WORDS.contains(&w));
        if known {
            understood.push(word.clone());
        }
    }

    let mut notes = Vec::new();
    // Adjectives no noun claimed: give them to the last group, or make a default body.
    if pending.has_object_words() {
        match groups.last_mut() {
            Some(g) => {
                g.colour = g.colour.take().or(pending.colour.take());
                g.size = g.size.or(pending.size);
                g.material = g.material.or(pending.material);
                g.motion = g.motion.or(pending.motion);
                g.spinning |= pending.spinning;
            }
            None => {
                notes.push("no shape named: using a ball".to_string());
                groups.push(Group {
                    count: pending.count.unwrap_or(1),
                    shape: Shape::Ball,
                    colour: pending.colour.take(),
                    size: pending.size,
                    material: pending.material,
                    motion: pending.motion,
                    spinning: pending.spinning,
                });
            }
        }
    }
    if groups.is_empty() {
        notes.push("no shape named: using one red rubber ball bouncing".to_string());
        groups.push(Group {
            count: 1,
            shape: Shape::Ball,
            colour: None,
            size: None,
            material: None,
            motion: None,
            spinning: false,
        });
    }
    // A motion said once for the whole scene applies to every group that has none.
    let scene_motion = groups.iter().find_map(|g| g.motion);

    let mut objects = Vec::new();
    for g in &groups {
        for _ in 0..g.count {
            if objects.len() == MAX_OBJECTS {
                notes.push(format!(
                    "more than {MAX_OBJECTS} bodies: kept the first {MAX_OBJECTS}"
                ));
                break;
            }
            let material = g.material.unwrap_or(match g.shape {
                Shape::Ball => Material::Rubber,
                Shape::Cube | Shape::Box => Material::Wood,
                Shape::Cylinder => Material::Metal,
            });
            let motion = g.motion.or(scene_motion).unwrap_or(match g.shape {
                Shape::Ball => Motion::Bouncing,
                _ => Motion::Falling,
            });
            objects.push(ObjectSpec {
                shape: g.shape,
                colour: g.colour.clone().unwrap_or(Colour {
                    name: format!("default ({})", material.props().name),
                    rgb: material.props().colour,
                }),
                material,
                size: g.size.unwrap_or(1.0),
                motion,
                spinning: g.spinning,
            });
        }
        if objects.len() == MAX_OBJECTS {
            break;
        }
    }
    let floor_material = floor_material.unwrap_or(Material::Concrete);
    SceneSpec {
        objects,
        floor: FloorSpec {
            material: floor_material,
            colour: floor_colour.unwrap_or(Colour {
                name: format!("default ({})", floor_material.props().name),
                rgb: floor_material.props().colour,
            }),
        },
        background: background.unwrap_or(Colour {
            name: "default (studio grey-blue)".into(),
            rgb: DEFAULT_BACKGROUND,
        }),
        shot: shot.unwrap_or(Shot::Medium),
        lighting: lighting.unwrap_or(Lighting::Studio),
        style,
        // Repeated style words must not push the texture to infinity or zero (the guide's
        // texture sigma, squared by diffusion): the product is clamped.
        texture_scale: texture_scale
            .clamp(*TEXTURE_SCALE_RANGE.start(), *TEXTURE_SCALE_RANGE.end()),
        understood,
        ignored,
        notes,
    }
}

/// Background of a prompt that names none: a light grey-blue studio wall.
const DEFAULT_BACKGROUND: [f32; 3] = [0.72, 0.76, 0.82];
/// "sky" without a colour.
const SKY_BLUE: [f32; 3] = [0.55, 0.72, 0.92];

fn is_surface_noun(w: &str) -> bool {
    vocabulary::FLOOR_WORDS.contains(&w)
        || singular(w).is_some_and(|s| vocabulary::FLOOR_WORDS.contains(&s))
}

fn is_floor_material(w: &str) -> bool {
    lookup(vocabulary::MATERIAL_WORDS, w).is_some_and(|m| vocabulary::FLOOR_MATERIALS.contains(&m))
}

/// A motion (or spin) word after a group describes that group ("a cube falling"); before
/// any noun, or while adjectives are pending, it describes the next one ("a bouncing ball").
fn attach_motion(groups: &mut [Group], pending: &mut Pending, motion: Option<Motion>, spin: bool) {
    match groups.last_mut() {
        Some(g) if !pending.has_object_words() && (motion.is_none() || g.motion.is_none()) => {
            g.motion = g.motion.or(motion);
            g.spinning |= spin;
        }
        _ => {
            pending.motion = pending.motion.or(motion);
            pending.spinning |= spin;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_words_set_objects_counts_colours_materials_and_motion() {
        let s = parse(
            "Three small red rubber balls bouncing and a big wooden cube falling on a stone floor",
        );
        assert_eq!(
            s.objects.len(),
            4,
            "three balls and one cube expected: {:?}",
            s.objects
        );
        let ball = &s.objects[0];
        assert_eq!(ball.shape, Shape::Ball, "first group is balls");
        assert_eq!(ball.colour.name, "red", "balls are red");
        assert_eq!(ball.material, Material::Rubber, "balls are rubber");
        assert_eq!(ball.size, 0.7, "balls are small");
        assert_eq!(ball.motion, Motion::Bouncing, "balls bounce");
        let cube = &s.objects[3];
        assert_eq!(cube.shape, Shape::Cube, "last body is the cube");
        assert_eq!(cube.material, Material::Wood, "cube is wooden");
        assert_eq!(cube.size, 1.4, "cube is big");
        assert_eq!(cube.motion, Motion::Falling, "cube falls");
        assert_eq!(s.floor.material, Material::Stone, "floor is stone");
        assert!(
            s.ignored.is_empty(),
            "nothing unknown in this prompt, got {:?}",
            s.ignored
        );
    }

    #[test]
    fn camera_lighting_background_and_style_are_understood() {
        let s = parse("close-up of a glass sphere rolling on grass against a dark blue wall at sunset, cinematic");
        assert_eq!(s.shot, Shot::Close, "close-up means the close shot");
        assert_eq!(s.lighting, Lighting::Sunset, "sunset lighting");
        assert_eq!(s.floor.material, Material::Grass, "on grass sets the floor");
        assert_eq!(s.background.name, "dark blue", "the wall is dark blue");
        assert_eq!(
            s.objects[0].material,
            Material::Glass,
            "the sphere is glass"
        );
        assert_eq!(s.objects[0].motion, Motion::Rolling, "the sphere rolls");
        assert_eq!(
            s.style,
            vec!["cinematic".to_string()],
            "style words are kept"
        );
    }

    #[test]
    fn unknown_words_are_reported_not_failing() {
        let s = parse("a purple flibbertigibbet ball zooming quantumly");
        assert_eq!(
            s.ignored,
            vec![
                "flibbertigibbet".to_string(),
                "zooming".into(),
                "quantumly".into()
            ],
            "unknown words are listed in prompt order"
        );
        assert_eq!(s.objects.len(), 1, "the ball is still understood");
        assert_eq!(s.objects[0].colour.name, "purple", "its colour too");
    }

    #[test]
    fn empty_or_nonsense_prompt_falls_back_to_a_default_ball() {
        for prompt in ["", "???", "lorem ipsum dolor"] {
            let s = parse(prompt);
            assert_eq!(s.objects.len(), 1, "{prompt:?}: one default body expected");
            assert_eq!(
                s.objects[0].shape,
                Shape::Ball,
                "{prompt:?}: the default is a ball"
            );
            assert!(
                !s.notes.is_empty(),
                "{prompt:?}: the fallback is noted for the user"
            );
        }
    }

    #[test]
    fn counts_are_capped_and_digits_understood() {
        let s = parse("40 cubes and 5 balls");
        assert_eq!(s.objects.len(), MAX_OBJECTS, "at most {MAX_OBJECTS} bodies");
        assert!(
            s.objects.iter().all(|o| o.shape == Shape::Cube),
            "the cubes come first and fill the cap"
        );
    }

    #[test]
    fn parsing_is_deterministic() {
        let p = "two blue metal cylinders colliding in a wide shot at night, grainy film";
        assert_eq!(
            parse(p),
            parse(p),
            "the same prompt must give the same scene"
        );
        let s = parse(p);
        assert_eq!(s.objects.len(), 2, "two cylinders");
        assert!(
            s.objects.iter().all(|o| o.motion == Motion::Colliding),
            "both collide"
        );
        assert_eq!(s.shot, Shot::Wide, "wide shot");
        assert_eq!(s.lighting, Lighting::Night, "night lighting");
    }

    #[test]
    fn repeated_style_words_keep_the_texture_scale_bounded() {
        // Found by reading the fuzz targets' code: 160 x "grainy" gave inf, 190 x "cartoon" 0.
        for (word, times) in [("grainy ", 160), ("cartoon ", 190)] {
            let scale = parse(&word.repeat(times)).texture_scale;
            assert!(
                scale.is_finite() && TEXTURE_SCALE_RANGE.contains(&scale),
                "{times} x {word:?} gave texture_scale {scale}"
            );
        }
    }

    #[test]
    fn vocabulary_lists_every_kind_of_word() {
        let v = vocabulary::vocabulary();
        for kind in [
            "shapes",
            "colours",
            "materials",
            "motions",
            "camera",
            "lighting",
            "style",
        ] {
            assert!(
                v.iter().any(|(k, words)| *k == kind && !words.is_empty()),
                "vocabulary lists {kind}"
            );
        }
    }
}
