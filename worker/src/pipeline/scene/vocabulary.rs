//! The words the prompt parser understands, as tables: one row per word, with what it means.
//!
//! The README lists these tables (see [`vocabulary`]); the parser in [`super`] looks words up
//! here after lower-casing and singularising them. Physical constants of the materials are in
//! [`MATERIALS`] with their sources.

use serde::{Deserialize, Serialize};

/// Shapes of the simulated bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// A sphere.
    Ball,
    /// A cube.
    Cube,
    /// A flat cuboid (2 : 1 : 1.2).
    Box,
    /// An upright cylinder.
    Cylinder,
}

/// Materials of bodies and floors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Material {
    Rubber,
    Wood,
    Metal,
    Glass,
    Plastic,
    Stone,
    Foam,
    Ice,
    Concrete,
    Grass,
    Sand,
    Carpet,
    Clay,
}

/// Physical and visual constants of one material.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaterialProps {
    /// The material.
    pub material: Material,
    /// Name used in the scene JSON and the contact events.
    pub name: &'static str,
    /// Density, kg/m³.
    pub density: f32,
    /// Coefficient of restitution of the material against a rigid, perfectly elastic
    /// partner; a pair bounces with the product of both (rapier's `Multiply` rule).
    pub restitution: f32,
    /// Coulomb friction coefficient (pairs average, rapier's default rule).
    pub friction: f32,
    /// Default colour when the prompt names none, linear RGB in `[0, 1]`.
    pub colour: [f32; 3],
    /// Strength of the specular highlight in the guide render.
    pub specular: f32,
    /// Standard deviation of the surface texture in the diffusion prior, data units.
    pub texture_sigma: f32,
}

/// Material constants. Densities are handbook values (Engineering ToolBox, "Densities of
/// solids"). Restitutions are typical measured coefficients for a ball of the material on a
/// rigid floor (rubber ~0.8, hard plastic ~0.65-0.7, wood ~0.5, steel ~0.6, glass ~0.65,
/// stone ~0.4, clay ~0.1); floors (grass, sand, carpet) are given the COR they impose on a
/// rigid ball. Frictions are dry Coulomb coefficients (Engineering ToolBox, "Friction
/// coefficients"). Texture sigmas are look choices: rough surfaces get more grain.
pub const MATERIALS: &[MaterialProps] = &[
    MaterialProps {
        material: Material::Rubber,
        name: "rubber",
        density: 1100.0,
        restitution: 0.8,
        friction: 0.9,
        colour: [0.85, 0.12, 0.1],
        specular: 0.15,
        texture_sigma: 0.06,
    },
    MaterialProps {
        material: Material::Wood,
        name: "wood",
        density: 700.0,
        restitution: 0.5,
        friction: 0.45,
        colour: [0.62, 0.42, 0.24],
        specular: 0.1,
        texture_sigma: 0.1,
    },
    MaterialProps {
        material: Material::Metal,
        name: "metal",
        density: 7800.0,
        restitution: 0.6,
        friction: 0.4,
        colour: [0.7, 0.72, 0.75],
        specular: 0.8,
        texture_sigma: 0.04,
    },
    MaterialProps {
        material: Material::Glass,
        name: "glass",
        density: 2500.0,
        restitution: 0.65,
        friction: 0.3,
        colour: [0.65, 0.85, 0.9],
        specular: 1.0,
        texture_sigma: 0.03,
    },
    MaterialProps {
        material: Material::Plastic,
        name: "plastic",
        density: 1000.0,
        restitution: 0.7,
        friction: 0.4,
        colour: [0.95, 0.8, 0.1],
        specular: 0.5,
        texture_sigma: 0.04,
    },
    MaterialProps {
        material: Material::Stone,
        name: "stone",
        density: 2600.0,
        restitution: 0.4,
        friction: 0.6,
        colour: [0.5, 0.5, 0.48],
        specular: 0.05,
        texture_sigma: 0.12,
    },
    MaterialProps {
        material: Material::Foam,
        name: "foam",
        density: 50.0,
        restitution: 0.3,
        friction: 0.8,
        colour: [0.95, 0.9, 0.7],
        specular: 0.0,
        texture_sigma: 0.08,
    },
    MaterialProps {
        material: Material::Ice,
        name: "ice",
        density: 917.0,
        restitution: 0.9,
        friction: 0.03,
        colour: [0.85, 0.93, 1.0],
        specular: 0.9,
        texture_sigma: 0.03,
    },
    MaterialProps {
        material: Material::Concrete,
        name: "concrete",
        density: 2400.0,
        restitution: 0.95,
        friction: 0.7,
        colour: [0.58, 0.58, 0.56],
        specular: 0.02,
        texture_sigma: 0.1,
    },
    MaterialProps {
        material: Material::Grass,
        name: "grass",
        density: 1000.0,
        restitution: 0.55,
        friction: 0.8,
        colour: [0.25, 0.55, 0.2],
        specular: 0.0,
        texture_sigma: 0.16,
    },
    MaterialProps {
        material: Material::Sand,
        name: "sand",
        density: 1600.0,
        restitution: 0.2,
        friction: 0.9,
        colour: [0.85, 0.75, 0.5],
        specular: 0.0,
        texture_sigma: 0.14,
    },
    MaterialProps {
        material: Material::Carpet,
        name: "carpet",
        density: 300.0,
        restitution: 0.4,
        friction: 0.9,
        colour: [0.55, 0.2, 0.22],
        specular: 0.0,
        texture_sigma: 0.12,
    },
    MaterialProps {
        material: Material::Clay,
        name: "clay",
        density: 1800.0,
        restitution: 0.1,
        friction: 0.8,
        colour: [0.72, 0.45, 0.3],
        specular: 0.05,
        texture_sigma: 0.08,
    },
];

impl Material {
    /// The constants of this material.
    pub fn props(self) -> &'static MaterialProps {
        MATERIALS
            .iter()
            .find(|m| m.material == self)
            .expect("MATERIALS has a row for every Material")
    }
}

/// Sizes, as a scale factor on the shape's base dimensions.
pub const SIZES: &[(&str, f32)] = &[
    ("tiny", 0.5),
    ("small", 0.7),
    ("little", 0.7),
    ("medium", 1.0),
    ("big", 1.4),
    ("large", 1.4),
    ("huge", 1.8),
    ("giant", 1.8),
];

/// Counts. "a"/"an" are counted as one.
pub const COUNTS: &[(&str, u32)] = &[
    ("a", 1),
    ("an", 1),
    ("one", 1),
    ("single", 1),
    ("two", 2),
    ("pair", 2),
    ("couple", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("few", 3),
    ("several", 4),
    ("many", 8),
];

/// Colours, RGB in `[0, 1]`.
pub const COLOURS: &[(&str, [f32; 3])] = &[
    ("red", [0.85, 0.12, 0.1]),
    ("green", [0.15, 0.65, 0.2]),
    ("blue", [0.12, 0.3, 0.85]),
    ("yellow", [0.95, 0.85, 0.1]),
    ("orange", [0.95, 0.5, 0.1]),
    ("purple", [0.5, 0.2, 0.7]),
    ("violet", [0.55, 0.3, 0.8]),
    ("pink", [0.95, 0.5, 0.7]),
    ("white", [0.93, 0.93, 0.93]),
    ("black", [0.07, 0.07, 0.08]),
    ("grey", [0.5, 0.5, 0.5]),
    ("gray", [0.5, 0.5, 0.5]),
    ("brown", [0.5, 0.32, 0.18]),
    ("cyan", [0.1, 0.8, 0.85]),
    ("teal", [0.1, 0.5, 0.5]),
    ("magenta", [0.85, 0.15, 0.7]),
    ("gold", [0.9, 0.72, 0.2]),
    ("golden", [0.9, 0.72, 0.2]),
    ("silver", [0.75, 0.76, 0.78]),
    ("beige", [0.85, 0.8, 0.65]),
];

/// Words that change the colour that follows them: (word, blend target, blend amount).
pub const COLOUR_MODIFIERS: &[(&str, [f32; 3], f32)] = &[
    ("dark", [0.0, 0.0, 0.0], 0.45),
    ("light", [1.0, 1.0, 1.0], 0.45),
    ("pale", [1.0, 1.0, 1.0], 0.6),
    ("bright", [1.0, 1.0, 1.0], 0.15),
];

/// Material words (adjectives and nouns) and the material they mean.
pub const MATERIAL_WORDS: &[(&str, Material)] = &[
    ("rubber", Material::Rubber),
    ("bouncy", Material::Rubber),
    ("wood", Material::Wood),
    ("wooden", Material::Wood),
    ("oak", Material::Wood),
    ("metal", Material::Metal),
    ("metallic", Material::Metal),
    ("steel", Material::Metal),
    ("iron", Material::Metal),
    ("aluminium", Material::Metal),
    ("aluminum", Material::Metal),
    ("glass", Material::Glass),
    ("crystal", Material::Glass),
    ("plastic", Material::Plastic),
    ("stone", Material::Stone),
    ("rock", Material::Stone),
    ("marble", Material::Stone),
    ("granite", Material::Stone),
    ("foam", Material::Foam),
    ("sponge", Material::Foam),
    ("ice", Material::Ice),
    ("icy", Material::Ice),
    ("concrete", Material::Concrete),
    ("cement", Material::Concrete),
    ("tile", Material::Concrete),
    ("tiled", Material::Concrete),
    ("asphalt", Material::Concrete),
    ("grass", Material::Grass),
    ("grassy", Material::Grass),
    ("lawn", Material::Grass),
    ("sand", Material::Sand),
    ("sandy", Material::Sand),
    ("beach", Material::Sand),
    ("carpet", Material::Carpet),
    ("rug", Material::Carpet),
    ("clay", Material::Clay),
    ("mud", Material::Clay),
];

/// Materials that are also nouns for a floor ("on grass").
pub const FLOOR_MATERIALS: &[Material] = &[
    Material::Grass,
    Material::Sand,
    Material::Ice,
    Material::Concrete,
    Material::Carpet,
];

/// Nouns naming a body.
pub const SHAPE_WORDS: &[(&str, Shape)] = &[
    ("ball", Shape::Ball),
    ("sphere", Shape::Ball),
    ("orb", Shape::Ball),
    ("marble", Shape::Ball),
    ("cube", Shape::Cube),
    ("dice", Shape::Cube),
    ("die", Shape::Cube),
    ("block", Shape::Cube),
    ("box", Shape::Box),
    ("crate", Shape::Box),
    ("brick", Shape::Box),
    ("book", Shape::Box),
    ("cylinder", Shape::Cylinder),
    ("can", Shape::Cylinder),
    ("barrel", Shape::Cylinder),
    ("puck", Shape::Cylinder),
    ("tube", Shape::Cylinder),
];

/// How a body moves at the start of the clip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Motion {
    /// Dropped from about 1.5 m with a small sideways drift.
    Bouncing,
    /// Dropped from about 1.5 m straight down.
    Falling,
    /// Starts on the floor with a horizontal velocity and the matching spin.
    Rolling,
    /// Starts on the floor with a horizontal velocity, no spin.
    Sliding,
    /// Thrown towards the other bodies at mid height.
    Colliding,
    /// Thrown in an arc from the side.
    Thrown,
    /// Placed on the floor at rest.
    Resting,
}

/// Motion words.
pub const MOTION_WORDS: &[(&str, Motion)] = &[
    ("bouncing", Motion::Bouncing),
    ("bounce", Motion::Bouncing),
    ("bounces", Motion::Bouncing),
    ("hopping", Motion::Bouncing),
    ("falling", Motion::Falling),
    ("fall", Motion::Falling),
    ("falls", Motion::Falling),
    ("dropping", Motion::Falling),
    ("dropped", Motion::Falling),
    ("drops", Motion::Falling),
    ("tumbling", Motion::Falling),
    ("rolling", Motion::Rolling),
    ("roll", Motion::Rolling),
    ("rolls", Motion::Rolling),
    ("sliding", Motion::Sliding),
    ("slide", Motion::Sliding),
    ("slides", Motion::Sliding),
    ("gliding", Motion::Sliding),
    ("colliding", Motion::Colliding),
    ("collide", Motion::Colliding),
    ("collision", Motion::Colliding),
    ("crashing", Motion::Colliding),
    ("smashing", Motion::Colliding),
    ("hitting", Motion::Colliding),
    ("thrown", Motion::Thrown),
    ("throw", Motion::Thrown),
    ("tossed", Motion::Thrown),
    ("flying", Motion::Thrown),
    ("launched", Motion::Thrown),
    ("resting", Motion::Resting),
    ("still", Motion::Resting),
    ("standing", Motion::Resting),
    ("sitting", Motion::Resting),
    ("lying", Motion::Resting),
    ("stacked", Motion::Resting),
];

/// Words that add spin to the body they describe.
pub const SPIN_WORDS: &[&str] = &["spinning", "rotating", "twirling", "whirling", "spin"];

/// Nouns for the surface the bodies stand on.
pub const FLOOR_WORDS: &[&str] = &[
    "floor", "ground", "table", "surface", "deck", "court", "pavement", "street", "road", "field",
    "platform", "tabletop",
];

/// Nouns for what is behind the scene.
pub const BACKGROUND_WORDS: &[&str] = &[
    "background",
    "backdrop",
    "wall",
    "walls",
    "sky",
    "room",
    "studio",
    "space",
];

/// Camera framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shot {
    /// Close to the action, narrow view.
    Close,
    /// The default framing.
    Medium,
    /// Far, wide view.
    Wide,
}

/// Camera words (after joining "close up" into "closeup").
pub const CAMERA_WORDS: &[(&str, Shot)] = &[
    ("closeup", Shot::Close),
    ("close", Shot::Close),
    ("macro", Shot::Close),
    ("zoomed", Shot::Close),
    ("tight", Shot::Close),
    ("detail", Shot::Close),
    ("medium", Shot::Medium),
    ("wide", Shot::Wide),
    ("far", Shot::Wide),
    ("distant", Shot::Wide),
    ("establishing", Shot::Wide),
    ("panoramic", Shot::Wide),
    ("overview", Shot::Wide),
];

/// Words that belong to the camera description but carry no setting.
pub const CAMERA_NOUNS: &[&str] = &[
    "shot", "camera", "view", "angle", "lens", "frame", "framing",
];

/// Lighting presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lighting {
    /// Soft key light from the camera side (the default).
    Studio,
    /// Bright, high light and a blue-ish ambient.
    Daylight,
    /// Low, warm light.
    Sunset,
    /// Dim, cold light.
    Night,
    /// Hard side light, little ambient.
    Dramatic,
}

/// Lighting words.
pub const LIGHTING_WORDS: &[(&str, Lighting)] = &[
    ("studio", Lighting::Studio),
    ("soft", Lighting::Studio),
    ("lit", Lighting::Studio),
    ("day", Lighting::Daylight),
    ("daylight", Lighting::Daylight),
    ("sunny", Lighting::Daylight),
    ("sunlight", Lighting::Daylight),
    ("noon", Lighting::Daylight),
    ("morning", Lighting::Daylight),
    ("sunset", Lighting::Sunset),
    ("sunrise", Lighting::Sunset),
    ("dusk", Lighting::Sunset),
    ("warm", Lighting::Sunset),
    ("evening", Lighting::Sunset),
    ("night", Lighting::Night),
    ("dim", Lighting::Night),
    ("moonlight", Lighting::Night),
    ("moody", Lighting::Night),
    ("dark", Lighting::Night),
    ("dramatic", Lighting::Dramatic),
    ("noir", Lighting::Dramatic),
    ("spotlight", Lighting::Dramatic),
    ("contrast", Lighting::Dramatic),
];

/// Style words and their effect on the texture strength of the prior (1 = no change).
pub const STYLE_WORDS: &[(&str, f32)] = &[
    ("cinematic", 1.0),
    ("realistic", 1.0),
    ("photorealistic", 1.0),
    ("beautiful", 1.0),
    ("hd", 1.0),
    ("4k", 1.0),
    ("8k", 1.0),
    ("detailed", 1.2),
    ("textured", 1.4),
    ("grainy", 1.8),
    ("film", 1.4),
    ("vintage", 1.5),
    ("gritty", 1.6),
    ("cartoon", 0.4),
    ("flat", 0.4),
    ("clean", 0.5),
    ("minimal", 0.5),
    ("minimalist", 0.5),
    ("smooth", 0.6),
    ("slow-motion", 1.0),
    ("physics", 1.0),
    ("simulation", 1.0),
];

/// Grammar words: understood, carry no setting, never reported as ignored.
pub const FILLER_WORDS: &[&str] = &[
    "the", "of", "and", "with", "in", "on", "onto", "into", "at", "against", "to", "from", "over",
    "under", "across", "along", "off", "by", "is", "are", "each", "other", "its", "their", "some",
    "that", "which", "while", "then", "as", "front", "inside", "down", "up", "around", "together",
    "another", "it", "they", "them", "video", "clip", "showing", "shows", "scene", "very",
    "slowly", "quickly", "fast", "slow", "top", "upon", "for", "or",
];

/// Every understood word grouped by kind, for the README and the scene JSON's reader.
pub fn vocabulary() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("shapes", SHAPE_WORDS.iter().map(|w| w.0).collect()),
        ("counts", COUNTS.iter().map(|w| w.0).collect()),
        ("colours", COLOURS.iter().map(|w| w.0).collect()),
        (
            "colour modifiers",
            COLOUR_MODIFIERS.iter().map(|w| w.0).collect(),
        ),
        ("sizes", SIZES.iter().map(|w| w.0).collect()),
        ("materials", MATERIAL_WORDS.iter().map(|w| w.0).collect()),
        ("motions", MOTION_WORDS.iter().map(|w| w.0).collect()),
        ("spin", SPIN_WORDS.to_vec()),
        ("floor", FLOOR_WORDS.to_vec()),
        ("background", BACKGROUND_WORDS.to_vec()),
        (
            "camera",
            CAMERA_WORDS
                .iter()
                .map(|w| w.0)
                .chain(CAMERA_NOUNS.iter().copied())
                .collect(),
        ),
        ("lighting", LIGHTING_WORDS.iter().map(|w| w.0).collect()),
        ("style", STYLE_WORDS.iter().map(|w| w.0).collect()),
        ("grammar", FILLER_WORDS.to_vec()),
    ]
}

/// Looks `word` up in a `(word, value)` table.
pub fn lookup<T: Copy>(table: &[(&str, T)], word: &str) -> Option<T> {
    table.iter().find(|(w, _)| *w == word).map(|(_, v)| *v)
}
