"""The texts of the built-in toy text population: prompts and their 32 responses each.

A small hand-written bank of everyday prompts; each prompt gets one response for every
combination of five readable attributes, all built from the same content:

    long     the answer plus "Here is why: ..." and "One more tip: ..." (else one sentence)
    formal   formal openers, closers and numbered lists (else casual ones and contractions)
    example  a closing "For example, ..." sentence
    warm     a friendly opener and closer (else a curt one, or none)
    bullets  the answer as a list of three points

Pure data and pure functions; the users who judge these texts are in
:mod:`mrm_lightning.text_population`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple


class Attributes(NamedTuple):
    """What a response has; bit i of an attribute code is field i."""

    long: bool = False
    formal: bool = False
    example: bool = False
    warm: bool = False
    bullets: bool = False

    @classmethod
    def from_code(cls, code: int) -> Attributes:
        return cls(*(bool(code >> i & 1) for i in range(len(cls._fields))))


ATTRIBUTES = Attributes._fields
ALL_ATTRIBUTES = [Attributes.from_code(code) for code in range(2 ** len(ATTRIBUTES))]


# (opener, closer) by (warm, formal); a response uses variant (prompt index + code) % 3.
WRAPPERS: dict[tuple[bool, bool], tuple[tuple[str, str], ...]] = {
    (True, False): (
        ("Ooh, fun one!", "Have fun with it!"),
        ("Happy to help with this!", "You have got this!"),
        ("Love this question!", "Hope that helps, enjoy!"),
    ),
    (True, True): (
        ("Thank you for your question; I would be glad to help.", "I wish you all the best."),
        (
            "What a thoughtful question. It is my pleasure to assist.",
            "Please do not hesitate to ask if you would like further assistance.",
        ),
        ("I appreciate you asking, and I am happy to help.", "Kind regards and best wishes."),
    ),
    (False, False): (("Eh, easy.", "That is it."), ("Okay.", "Done."), ("Right, so.", "Whatever.")),
    (False, True): (
        ("The answer is as follows.", ""),
        ("Response:", "No further detail is required."),
        ("", "That is all."),
    ),
}

CONTRACTIONS = [
    (re.compile(rf"\b{long}\b"), short)
    for long, short in (
        ("I would", "I'd"),
        ("I am", "I'm"),
        ("It is", "It's"),
        ("it is", "it's"),
        ("do not", "don't"),
        ("does not", "doesn't"),
        ("is not", "isn't"),
        ("cannot", "can't"),
        ("will not", "won't"),
        ("you will", "you'll"),
        ("you are", "you're"),
        ("you have", "you've"),
        ("You have", "You've"),
        ("they are", "they're"),
        ("that is", "that's"),
        ("That is", "That's"),
    )
]


@dataclass(frozen=True)
class Topic:
    """One prompt's content: the answer, two more sentences, an example and three points."""

    prompt: str
    answer: str
    more: str
    example: str
    points: tuple[str, str, str]


def elaborate(more: str) -> str:
    """The two sentences of a long answer, with the signposts of one: why, then one more tip."""
    reason, tip = re.split(r"(?<=[.!?]) ", more, maxsplit=1)
    return f"Here is why: {reason} One more tip: {tip}"


def render(topic: Topic, attributes: Attributes, variant: int = 0) -> str:
    """The response to ``topic.prompt`` that has ``attributes`` (``variant`` picks the wording
    of its opener and closer)."""
    long, formal, example, warm, bullets = attributes
    opener, closer = WRAPPERS[(warm, formal)][variant % 3]
    if bullets:
        lead = "The main points are as follows:" if formal else "Quick rundown:"
        marks = [
            f"{i}. {p[0].upper()}{p[1:]}." if formal else f"- {p}"
            for i, p in enumerate(topic.points, start=1)
        ]
        body = "\n".join([lead, *marks]) + ("\n" + elaborate(topic.more) if long else "")
    else:
        body = topic.answer + (" " + elaborate(topic.more) if long else "")
    if example:
        body += ("\n" if bullets else " ") + ("For example, " if formal else "Quick example: ")
        body += topic.example
    text = " ".join(part for part in (opener, body, closer) if part)
    if not formal:
        for pattern, short in CONTRACTIONS:
            text = pattern.sub(short, text)
    return text


def parse_topics(bank: str) -> list[Topic]:
    """Blocks of ``Q:`` prompt, ``A:`` answer, ``M:`` more, ``E:`` example, ``P:`` points
    (``;``-separated); a repeated key continues its field; blank lines separate topics."""
    topics = []
    for block in bank.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.strip().splitlines():
            key, value = line[0], line[2:].strip()
            fields[key] = f"{fields[key]} {value}" if key in fields else value
        points = tuple(p.strip() for p in fields["P"].split(";"))
        topics.append(Topic(fields["Q"], fields["A"], fields["M"], fields["E"], points))
    return topics


TOPICS = parse_topics(
    """
Q: Suggest a name for a cat.
A: I would call the cat Miso.
M: A short name with two syllables is easy for a cat to learn.
M: Say it in the same voice every time, and it will start to answer within a couple of weeks.
E: a shy ginger cat might suit Biscuit better than a loud name.
P: Miso; Pepper; Biscuit

Q: Explain why the sky is blue.
A: The sky is blue because air scatters blue sunlight much more than red light.
M: Short wavelengths bounce off air molecules far more strongly, so blue reaches you from
M: everywhere. At sunset the light crosses more air, the blue is scattered away, and red is left.
E: a glass of water with a drop of milk looks bluish from the side and orange against a lamp.
P: sunlight holds every colour; air scatters blue the most; scattered blue comes from all sides

Q: Recommend a weekend activity.
A: Go for a long walk somewhere you have never been.
M: It costs nothing, gets you outside, and a new place makes the day feel longer.
M: Pack a snack, keep your phone in your pocket, and stop wherever something looks interesting.
E: a riverside path in the next town over can fill a whole Saturday morning.
P: a walk on a new trail; a visit to a local market; a picnic in the park

Q: How do I keep basil alive indoors?
A: Put the basil in your sunniest window and water it when the top of the soil feels dry.
M: Basil needs six hours of light a day and does not like wet roots.
M: Pinch off the top leaves every week so the plant grows bushy instead of tall and thin.
E: a pot on a south-facing kitchen sill, watered every three or four days, usually thrives.
P: six hours of sun; water when the top inch is dry; pinch off the tips often

Q: What should I cook for dinner tonight?
A: Make a vegetable stir-fry with rice.
M: It takes about twenty minutes and uses whatever is already in the fridge.
M: Cook the rice first, fry the firm vegetables before the soft ones, and finish with soy sauce.
E: broccoli, carrots and a handful of peanuts make a quick weeknight version.
P: vegetable stir-fry; pasta with tomato sauce; an omelette with salad

Q: How can I fall asleep faster?
A: Go to bed at the same time every night and keep screens out of the bedroom.
M: A steady schedule sets your body clock, and bright screens tell your brain it is daytime.
M: If you are still awake after twenty minutes, get up and read something dull in dim light.
E: switching the phone off at ten and reading a paper book until half past helps within a week.
P: a fixed bedtime; no screens in bed; a cool, dark room

Q: Give me a tip for saving money.
A: Move a fixed amount into savings on the day you get paid.
M: Money you never see in your current account is money you do not spend by accident.
M: Start small, even five percent, and raise it a little every few months.
E: an automatic transfer of fifty pounds each payday adds up to six hundred a year.
P: pay yourself first; cancel unused subscriptions; plan meals before shopping

Q: How do I make a good cup of coffee?
A: Use freshly ground beans and water just off the boil.
M: Ground coffee loses its flavour within days, and boiling water makes it bitter.
M: Start with about one gram of coffee to sixteen grams of water and adjust to taste.
E: fifteen grams of medium-ground beans in a French press with 250 ml of water, for four minutes.
P: fresh beans; water just below boiling; the right ratio

Q: What is a good book for a long flight?
A: Take a gripping novel such as The Martian by Andy Weir.
M: A fast plot keeps you turning pages when the cabin is noisy and you cannot concentrate.
M: Pick something easy to put down and pick up again, since meals and announcements interrupt.
E: many readers finish The Martian in a single transatlantic flight.
P: The Martian; a collection of short stories; a light mystery

Q: How do I start running?
A: Begin with short run-walk sessions three times a week.
M: Alternating running and walking lets your joints and lungs adapt without injury.
M: Add a minute of running each week, and slow down whenever you cannot speak in full sentences.
E: one minute of running followed by two of walking, repeated eight times, is a good start.
P: run-walk intervals; three sessions a week; a slow, chatty pace

Q: Help me write a birthday message for a coworker.
A: Happy birthday, and thank you for making our team a nicer place to work!
M: A short message that names something real about the person feels personal but not awkward.
M: Sign it with your first name, and mention a shared project if you know them well.
E: you could add that their help on the spring launch saved the whole week.
P: wish them a happy birthday; thank them for something specific; wish them a good year

Q: How do I remove a coffee stain from a shirt?
A: Rinse the stain with cold water from the back, then rub in a little liquid detergent.
M: Cold water stops the stain from setting, and rinsing from the back pushes it out.
M: Let the detergent sit for ten minutes, and do not use the dryer until the stain is gone.
E: a fresh stain on a white cotton shirt usually lifts with dish soap and a soft brush.
P: rinse with cold water; dab on liquid detergent; wash before drying

Q: Suggest a gift for my dad.
A: Get him a book about his favourite hobby.
M: Useful gifts get used, and a hobby book shows you paid attention to what he enjoys.
M: If he has everything, an afternoon out together is often the present he remembers most.
E: a keen angler would love a guide to the best rivers in his region.
P: a hobby book; tickets to a game; a day out together

Q: Explain what a black hole is.
A: A black hole is a region of space where gravity is so strong that not even light escapes.
M: It forms when a huge star collapses and squeezes its mass into a tiny space.
M: The boundary beyond which nothing returns is called the event horizon.
E: the black hole at the centre of our galaxy weighs about four million Suns.
P: extremely strong gravity; light cannot escape; formed by collapsing stars

Q: How do I learn a new language?
A: Practise a little every day and speak with real people as early as possible.
M: Short daily practice beats long weekly sessions, and speaking makes you use what you know.
M: Learn the thousand most common words first, since they cover most everyday speech.
E: twenty minutes of flashcards each morning and one call a week with a tutor works well.
P: daily practice; the most common words first; conversations early on

Q: What is a healthy breakfast?
A: Have oatmeal with fruit and a handful of nuts.
M: It gives you fibre, protein and slow energy that lasts until lunch.
M: Sugary cereals give a quick boost and then leave you hungry an hour later.
E: a bowl of oats with sliced banana and walnuts takes five minutes to make.
P: oatmeal with fruit; eggs on wholegrain toast; yoghurt with berries

Q: How do I stay focused while working from home?
A: Work in a fixed spot and plan your day in short blocks with breaks.
M: A dedicated place tells your brain it is time to work, and breaks keep attention fresh.
M: Close chat and email during a block and check them only in between.
E: twenty-five minutes of work and a five-minute break, four times, then a longer rest.
P: a dedicated workspace; timed work blocks; notifications off

Q: Suggest a board game for a family night.
A: Try Ticket to Ride.
M: The rules take five minutes to learn, and children and adults can both win.
M: A game lasts about an hour, which is just right before bedtime.
E: a family with kids aged eight and up can play it on the very first evening.
P: Ticket to Ride; Carcassonne; Uno

Q: How do I write a good cover letter?
A: Open with why you want this particular job and show one achievement that fits it.
M: Hiring managers skim, so a specific reason and proof of results stand out.
M: Keep it under one page and reuse a few words from the job advert.
E: saying you cut delivery times by a third is stronger than saying you are hard-working.
P: a specific opening; one proven result; less than one page

Q: Why do leaves change colour in autumn?
A: Leaves change colour because trees stop making green chlorophyll as the days get shorter.
M: Once the green fades, the yellow and orange pigments that were there all along show through.
M: Reds come from new pigments made from sugars trapped in the leaf on cool, sunny days.
E: maples turn bright red after a dry, sunny autumn with cold nights.
P: shorter days; chlorophyll breaks down; hidden pigments show through

Q: How do I clean a cast iron pan?
A: Wash it with hot water and a brush, dry it at once, and rub in a thin layer of oil.
M: Cast iron rusts when left wet, and the oil keeps its non-stick coating in good shape.
M: A little soap is fine, but never soak the pan or put it in the dishwasher.
E: after frying eggs, a quick scrub, a minute on a low flame and a drop of oil is all it needs.
P: scrub with hot water; dry on the stove; oil it lightly

Q: Recommend a podcast.
A: Listen to Radiolab.
M: Each episode turns a scientific question into a gripping story with great sound design.
M: Episodes stand alone, so you can start with whatever topic catches your eye.
E: the episode about colours is a good first listen.
P: Radiolab; Ninety-Nine Percent Invisible; Hardcore History

Q: How do I prepare for a job interview?
A: Research the company and practise answering common questions out loud.
M: Knowing their work lets you give relevant answers, and rehearsing makes you calmer.
M: Prepare two or three questions of your own to ask at the end.
E: a short story about a problem you solved beats a list of your strengths.
P: research the company; rehearse answers aloud; prepare your own questions

Q: What should I pack for a beach trip?
A: Pack sunscreen, a hat, water and a towel.
M: Sunburn and thirst are the two things most likely to ruin a beach day.
M: A small umbrella and a bag for wet clothes make the afternoon much more comfortable.
E: one litre of water per person for every three hours in the sun is a sensible amount.
P: sunscreen; a wide hat; plenty of water

Q: How do I calm down before a presentation?
A: Take slow breaths and rehearse your first minute until you know it by heart.
M: Slow breathing lowers your heart rate, and a confident start carries you through the rest.
M: The audience wants you to succeed and rarely notices small mistakes.
E: breathe in for four counts and out for six, five times, just before you go on.
P: slow breathing; a memorised opening; a friendly face in the room

Q: Explain how vaccines work.
A: A vaccine trains your immune system to recognise a germ without making you ill.
M: It shows your body a harmless piece of the germ, so it builds antibodies in advance.
M: If the real germ arrives later, your defences respond fast enough to stop serious illness.
E: the flu shot contains inactivated virus that cannot infect you but still teaches your body.
P: a harmless piece of the germ; the body makes antibodies; fast protection later

Q: How often should I water a cactus?
A: Water a cactus about once every two or three weeks, and even less in winter.
M: Cacti store water in their stems and rot quickly if the soil stays wet.
M: Soak the soil fully, let it drain, and wait until it is completely dry before watering again.
E: a small cactus on a sunny sill might get a good drink on the first and fifteenth of a month.
P: every two to three weeks; less in winter; let the soil dry out fully

Q: Suggest a movie for a rainy evening.
A: Watch Paddington 2.
M: It is funny, warm and clever, and adults enjoy it as much as children do.
M: It runs just over an hour and a half, so it fits an evening without a late night.
E: the scene where Paddington runs the prison kitchen is a favourite of many viewers.
P: Paddington 2; Spirited Away; The Princess Bride

Q: How do I make my password more secure?
A: Use a long passphrase of four random words and a different one for every site.
M: Length matters more than odd symbols, and reused passwords leak from one site to another.
M: A password manager remembers them for you, and two-factor login adds a second lock.
E: a passphrase like maple-rocket-velvet-harbour is easy to remember and hard to guess.
P: long passphrases; one per site; two-factor login

Q: What is a fun hobby to pick up?
A: Try sketching.
M: It needs only a pencil and paper, and you can see yourself improve within weeks.
M: Draw something small every day, such as your mug or your shoes, instead of waiting.
E: ten minutes of sketching your breakfast each morning fills a notebook in a few months.
P: sketching; baking bread; birdwatching

Q: How do I deal with a noisy neighbour?
A: Talk to them calmly and tell them when the noise bothers you.
M: Most people do not realise how far sound travels and are happy to adjust once they know.
M: If that does not work, note the dates and times before contacting the landlord.
E: a polite knock to say that music after eleven keeps your baby awake often works that day.
P: a calm conversation; specific times; the landlord as a last step

Q: Explain what inflation is.
A: Inflation is the general rise in prices over time, so money buys a little less each year.
M: It happens when demand grows faster than supply or when costs such as energy go up.
M: Central banks usually aim for about two percent a year and raise interest rates above it.
E: bread that cost one pound last year and costs one pound five now is five percent inflation.
P: prices rise; money buys less; central banks try to steady it

Q: How do I choose a good watermelon?
A: Pick a heavy watermelon with a creamy yellow spot on one side.
M: Weight means juice, and the yellow spot shows it ripened on the ground in the sun.
M: Tap it too: a ripe one sounds deep and hollow rather than dull.
E: of two melons the same size, the heavier one with a butter-yellow patch is usually sweeter.
P: heavy for its size; a yellow ground spot; a hollow sound

Q: Recommend a way to learn to code.
A: Start with Python and build a small project you actually care about.
M: Python reads almost like English, and a real project keeps you going when tutorials drag.
M: Spend a little time every day and look up errors rather than copying whole solutions.
E: a script that renames your holiday photos by date teaches files, loops and strings at once.
P: learn Python; build a small project; practise daily

Q: How do I get better at chess?
A: Solve a few tactics puzzles every day and review your own lost games.
M: Most club games are decided by tactics, and your losses show exactly what to fix.
M: Learn the principles of openings rather than memorising long lines.
E: ten puzzles each morning and one slow online game in the evening makes steady progress.
P: daily puzzles; review lost games; opening principles

Q: Explain why we have seasons.
A: We have seasons because the Earth is tilted, so each half leans toward the Sun in turn.
M: When your half leans toward the Sun, light hits it more directly and days are longer.
M: It is not about distance: the Earth is actually closest to the Sun in early January.
E: when it is summer in Spain, it is winter in Argentina.
P: the Earth is tilted; direct sunlight means summer; the hemispheres have opposite seasons
"""
)
