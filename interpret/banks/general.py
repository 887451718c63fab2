"""The general text bank, written for this project: short image descriptions, each tagged with one property.

Each property has its own vocabulary and its own sentence frames; `descriptions()` combines them in a fixed
order, without duplicates. Properties: see `PROPERTIES` in `interpret.banks`.
"""
from __future__ import annotations

import re

COLOURS = """red crimson scarlet maroon burgundy pink hot-pink magenta coral salmon orange amber peach yellow golden
mustard beige brown tan chocolate olive green lime emerald mint teal turquoise cyan sky-blue blue navy cobalt azure
indigo violet purple lavender lilac plum white ivory cream grey silver charcoal black""".split()
COLOUR_FRAMES = ("something {}", "a photo dominated by {}", "shades of {}", "a bright {} colour",
                 "a plain {} background", "an object painted {}")
COLOUR_EXTRAS = ("pastel colours", "neon colours", "rainbow colours", "a monochrome image", "sepia tones",
                 "warm colours", "cool colours", "muted earthy colours", "vivid saturated colours",
                 "black and white", "red and white stripes of colour", "blue and yellow", "green and brown",
                 "pink and purple hues", "a colourful scene", "a washed-out faded palette")

SHAPES = """circle square rectangle triangle star cross heart spiral hexagon octagon oval diamond crescent arch
cube sphere cone cylinder pyramid ring dome zigzag-line wavy-line straight-line curve dot arrow-shape
trapezoid pentagon semicircle""".split()
SHAPE_FRAMES = ("a {}", "a {} shape", "a large {}", "a small {}", "the outline of a {}", "an image with a {}",
                "a {} drawn in the middle", "a flat {}")

TEXTURES = """stripes polka-dots checkerboard plaid tartan herringbone paisley camouflage leopard-print
zebra-stripes honeycomb mesh lace knitted-wool fur feathers scales ripples waves cracks wrinkles bubbles
wood-grain marble-veins rust-patches moss peeling-paint gravel pebbles sand-dunes tree-bark woven-threads
sequins glitter frost-crystals raindrops foam""".split()
TEXTURE_FRAMES = ("a pattern of {}", "a close-up of {}", "a surface covered in {}", "a texture of {}",
                  "a background of {}", "fabric with {}", "a repeating pattern of {}")

LOCATIONS = """beach forest desert mountain-range city-street kitchen living-room office classroom stadium airport
farm river lake ocean coral-reef park garden jungle snowy-field cave bridge highway subway-station library
hospital restaurant market church castle village harbour canyon waterfall meadow parking-lot bedroom bathroom
museum playground train-station construction-site vineyard""".split()
LOCATION_FRAMES = ("a photo taken at a {}", "a view of a {}", "a wide shot of a {}", "a {} in the background",
                   "an empty {}", "a crowded {}")

ANIMALS = """dog puppy cat kitten horse cow sheep pig goat chicken duck eagle owl parrot penguin flamingo swan lion
tiger leopard cheetah elephant giraffe zebra rhinoceros hippopotamus bear polar-bear panda wolf fox deer rabbit
squirrel mouse bat monkey gorilla kangaroo koala camel crocodile snake lizard turtle frog shark whale dolphin
octopus jellyfish crab butterfly bee spider ladybug snail goldfish seal otter hedgehog peacock""".split()
ANIMAL_FRAMES = ("a photo of a {}", "a close-up of a {}", "a {} in the wild", "a cute {}", "a {} looking at the camera")

OBJECTS = """car bicycle motorcycle bus train airplane sailboat chair table sofa bed lamp clock phone laptop
keyboard television camera guitar piano violin cup mug bottle wine-glass plate fork spoon bowl umbrella backpack
handbag suitcase shoe hat wristwatch pair-of-glasses key book pen scissors hammer football kite skateboard
surfboard teddy-bear vase candle mirror door window ladder bench traffic-light fire-hydrant toaster""".split()
OBJECT_FRAMES = ("a photo of a {}", "a {} on a table", "a close-up of a {}", "an old {}", "a new {}")

PEOPLE = ("a man", "a woman", "a child", "an old man", "an elderly woman", "a young girl", "a little boy",
          "a group of friends", "a couple", "a crowd of people", "a baby", "a teenager")
ACTIVITIES = ("running", "dancing", "swimming", "cooking", "reading", "singing", "laughing", "crying", "smiling",
              "sleeping", "eating", "hugging", "waving", "jumping", "climbing", "painting", "playing football",
              "riding a bike", "shouting angrily", "looking surprised")
PERSON_EXTRAS = ("a portrait of a happy person", "a sad face", "an angry face", "a frightened expression",
                 "a calm and relaxed person", "a bored student", "an excited fan", "a proud athlete",
                 "a worried parent", "a doctor at work", "a chef in a kitchen", "a soldier in uniform",
                 "a firefighter", "a police officer", "a nurse", "a farmer in a field", "a businessman in a suit",
                 "a bride in a white dress", "a skier on a slope", "a surfer riding a wave")

NUMBERS = ("a single", "a lone", "two", "three", "four", "five", "six", "seven", "eight", "ten", "a dozen",
           "a few", "several", "many", "hundreds of", "a pair of")
COUNTED = ("dogs", "cats", "people", "birds", "cars", "trees", "apples", "balloons", "chairs", "flowers", "boats",
           "houses", "coins", "candles", "books")

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LETTER_FRAMES = ("the letter {}", "a large letter {}", "the letter {} painted on a wall")
DIGIT_FRAMES = ("the number {}", "the digit {} printed in black")
WORDS = ("stop", "love", "sale", "open", "exit", "hello", "welcome", "danger", "coffee", "hotel", "taxi", "police",
         "free", "push", "pull", "closed", "news", "music", "peace", "home")
WORD_FRAMES = ("the word '{}'", "a sign that says '{}'")
TEXT_EXTRAS = ("a sign with text", "handwritten text", "a company logo", "a barcode", "a QR code", "an arrow symbol",
               "a dollar sign", "a heart symbol", "a peace sign", "a warning sign", "a street sign",
               "a neon sign with letters", "a page of printed text", "graffiti lettering", "Chinese characters",
               "Arabic script", "a calendar page", "a map with labels", "a price tag", "a license plate",
               "a book cover with a title", "an equation on a blackboard", "a scoreboard", "a newspaper headline",
               "a menu board", "a road marking", "subtitles at the bottom", "a watermark", "a typed letter",
               "a speech bubble with words", "musical notes", "a clock face with numbers", "a ticket",
               "a poster with a slogan", "a recycling symbol", "an emoji", "a hashtag", "a copyright symbol",
               "a stamp with letters", "a keyboard with letters", "a banner with writing", "a label on a bottle")

STYLES = ("watercolor painting", "oil painting", "pencil sketch", "charcoal drawing", "cartoon", "anime drawing",
          "comic book panel", "pixel art image", "3D render", "low-poly render", "vector illustration",
          "black-and-white photograph", "vintage photograph", "polaroid photo", "long-exposure photograph",
          "HDR photograph", "tilt-shift photograph", "impressionist painting", "cubist painting", "pop art print",
          "surrealist painting", "abstract painting", "graffiti mural", "mosaic", "stained glass window",
          "collage", "embroidery", "woodcut print", "ink drawing", "minimalist poster", "blueprint",
          "technical drawing", "child's drawing", "renaissance painting", "baroque painting", "art deco poster",
          "ukiyo-e print", "digital painting", "concept art", "chalk drawing", "crayon drawing", "linocut",
          "x-ray image", "thermal image", "screenshot of a video game")
STYLE_FRAMES = ("a {}", "a {} of a landscape", "a {} of a face", "a {} of an animal", "a {} of a city",
                "a {} of a still life")

CONDITIONS = ("a sunny day", "a rainy day", "a snowy day", "a foggy morning", "a thunderstorm", "lightning",
              "a rainbow", "sunset", "sunrise", "night time", "dusk", "dawn", "golden hour", "an overcast sky",
              "stormy weather", "a blizzard", "heat haze", "frost", "moonlight", "a starry night",
              "harsh midday shadows", "a backlit silhouette", "soft diffuse light", "neon lights at night",
              "candlelight", "a spotlight", "dim light", "bright daylight", "autumn", "winter", "spring",
              "summer", "a cloudy sky", "a clear blue sky", "lens flare", "fireworks at night", "twilight",
              "strong wind", "a dust storm", "a full moon")
CONDITION_FRAMES = ("{}", "a photo taken during {}", "a landscape during {}", "a street scene during {}",
                    "a field during {}", "a lake during {}")

MATERIALS = """wood metal steel glass plastic stone marble concrete brick leather cotton wool silk denim paper
cardboard rubber ceramic porcelain clay gold silver copper bronze rusty-iron ice sand velvet bamboo wicker cork
crystal granite felt""".split()
MATERIAL_FRAMES = ("an object made of {}", "a {} surface", "a sculpture made of {}", "a table made of {}",
                   "a wall of {}", "a box made of {}", "a close-up of {}")


def with_articles(text: str) -> str:
    """'a owl' -> 'an owl', 'a x-ray image' -> 'an x-ray image'."""
    return re.sub(r"\ba (?=[aeiouAEIOU]|x-ray)", "an ", text)


def _fill(frames, words) -> list[str]:
    return [with_articles(frame.format(word.replace("-", " ") if word != "x-ray" else word))
            for word in words for frame in frames]


def _counted(number: str, things: str) -> str:
    """'two dogs', 'a single dog', 'a lone person'."""
    if number in ("a single", "a lone"):
        things = "person" if things == "people" else things[:-1]
    return f"{number} {things}"


def descriptions() -> list[tuple[str, str]]:
    """(description, property) pairs, 3,072 of them, each description once."""
    by_property = {
        "colour": _fill(COLOUR_FRAMES, COLOURS) + list(COLOUR_EXTRAS),
        "shape": _fill(SHAPE_FRAMES, SHAPES),
        "texture": _fill(TEXTURE_FRAMES, TEXTURES),
        "location": _fill(LOCATION_FRAMES, LOCATIONS),
        "animal": _fill(ANIMAL_FRAMES, ANIMALS),
        "object": _fill(OBJECT_FRAMES, OBJECTS),
        "person": [f"{who} {doing}" for who in PEOPLE for doing in ACTIVITIES] + list(PERSON_EXTRAS),
        "count": [_counted(number, things) for number in NUMBERS for things in COUNTED],
        "text": (_fill(LETTER_FRAMES, LETTERS) + _fill(DIGIT_FRAMES, "0123456789") + _fill(WORD_FRAMES, WORDS)
                 + list(TEXT_EXTRAS)),
        "style": _fill(STYLE_FRAMES, STYLES),
        "light": _fill(CONDITION_FRAMES, CONDITIONS),
        "material": _fill(MATERIAL_FRAMES, MATERIALS),
    }
    seen, pairs = set(), []
    for prop, texts in by_property.items():
        for text in texts:
            if text not in seen:
                seen.add(text)
                pairs.append((text, prop))
    return pairs
