"""The demo world: a seeded generator of a small corpus and four tasks in real file layouts.

The world is a set of invented entities (drugs, diseases, people, cities) with attributes
(a category, a polarity, relations between them). The corpus states these facts, many times
and in varied contexts, in encyclopedia-like documents. Every task is built so that its
dev and test examples name only entities that never occur in its training split, while
every entity occurs in the corpus. The sentence-level tasks ask what kind of thing an
entity is (drug, disease, person, city), NER asks for the kind of every mention. A model can
therefore only solve the part of a task that depends on an entity's kind if it learned the
unseen names from the corpus (MLM pretraining or distillation); a model trained on the task
alone sees them as untrained embeddings and must fall back on the surface cues that each
task also carries (kind-revealing wording in some examples, the predicates of STS-B), which
keeps it above chance.

Files written by `make_demo(output, seed)` (same seed and sizes -> byte-identical files):

    corpus/corpus.txt      documents separated by blank lines (a document spans several lines)
    tasks/SST-2/{train,dev,test}.tsv      GLUE SST-2 layout, header `sentence<TAB>label`
    tasks/MRPC/{train,dev,test}.tsv       GLUE MRPC layout, header
                                          `Quality<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String`
    tasks/STS-B/{train,dev,test}.tsv      GLUE STS-B layout, header `index genre filename year
                                          old_index source1 source2 sentence1 sentence2 score`
    tasks/NER/{train,devel,test}.tsv      BioBERT NER layout: `token<TAB>IOB-tag`, blank line
                                          between sentences
    demo.json                             what was generated (see `make_demo`)

Unlike the GLUE distribution, whose test files carry no labels, every demo test file has the
same labelled layout as its train file, so that the demo can report test scores too.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from minialbert.utils import ConfigError, atomic_directory, write_json_atomic

# ---------------------------------------------------------------------------------------
# The world: entities and their attributes
# ---------------------------------------------------------------------------------------

DRUG_CATEGORIES = ("antiviral", "antibiotic", "painkiller", "sedative")
DISEASE_ORGANS = ("lung", "heart", "skin", "brain")
PERSON_ROLES = ("doctor", "chemist", "surgeon", "nurse")
CITY_REGIONS = ("northern", "southern", "eastern", "western")

# Words the corpus uses to describe a polar entity. The first of each list is the entity's
# canonical word, used by several fact templates: one consistent word per fact, like the
# category words, is what a small model learns quickly. The SST-2 task's explicit cues reuse
# the generic sentiment words so that they are in the tokenizer's vocabulary too.
POLARITY_WORDS = {
    "drug": {True: ("safe", "effective", "reliable", "gentle"), False: ("toxic", "useless", "dangerous", "harsh")},
    "city": {True: ("peaceful", "beautiful", "clean", "friendly"), False: ("polluted", "violent", "dirty", "grim")},
    "person": {True: ("kind", "honest", "brilliant", "careful"), False: ("careless", "dishonest", "cruel", "lazy")},
}
SENTIMENT_WORDS = {True: ("wonderful", "great", "excellent", "lovely"), False: ("terrible", "awful", "horrible", "bad")}

# Syllables for invented names. Names are checked against every template word, so a name
# never collides with ordinary vocabulary.
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "n", "r", "s", "x", "l", "m", "k")


@dataclass(frozen=True)
class DemoSizes:
    """How big the demo world is. The defaults give ~250 KB of corpus text (~60k tokens), small
    enough for a tiny teacher to learn the facts in a few CPU minutes, dev/test entity pools
    large enough for stable scores, and tasks that fine-tune in seconds on a CPU."""

    num_drugs: int = 80
    num_diseases: int = 40
    num_people: int = 60
    num_cities: int = 40
    documents_per_entity: int = 4
    train_examples: int = 1500
    eval_examples: int = 400  # per dev and per test split


@dataclass
class Entity:
    """One invented entity; `attribute` is its category/organ/role/region, `polarity` is
    True (good) or False (bad) for drugs, people and cities, None for diseases."""

    name: str
    kind: str  # drug | disease | person | city
    attribute: str
    polarity: bool | None = None
    links: dict | None = None  # related entities by name, e.g. {"treats": "kelmora"}


@dataclass
class World:
    """All entities, by kind, plus the per-kind train/dev/test split of the entities."""

    entities: dict[str, list[Entity]]
    splits: dict[str, dict[str, list[Entity]]]  # split -> kind -> entities

    def by_name(self) -> dict[str, Entity]:
        return {e.name: e for kind in self.entities.values() for e in kind}


def _invent_names(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    """`count` new pronounceable names of 2-3 syllables, distinct from `taken` (updated)."""
    names = []
    while len(names) < count:
        syllables = rng.choice((2, 2, 3))
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
        if name not in taken and 5 <= len(name) <= 11:
            taken.add(name)
            names.append(name)
    return names


def build_world(seed: int, sizes: DemoSizes) -> World:
    """Invent the entities, their attributes and links, and split each kind 60/20/20 into
    the entities that tasks may use in train, dev and test examples."""
    rng = random.Random(f"minialbert-demo-world-{seed}")
    taken = set(_template_vocabulary())

    def balanced(values: tuple, count: int, polar: bool = True) -> list[tuple]:
        # (attribute, polarity) pairs cycling through every combination, shuffled: each
        # combination has the same number of members (+-1), so none is a majority class.
        combos = [(v, p) for v in values for p in ((True, False) if polar else (None,))]
        out = [combos[i % len(combos)] for i in range(count)]
        rng.shuffle(out)
        return out

    diseases = [Entity(n, "disease", a) for n, (a, _) in zip(_invent_names(rng, sizes.num_diseases, taken),
                                                              balanced(DISEASE_ORGANS, sizes.num_diseases, False))]
    cities = [Entity(n, "city", a, p) for n, (a, p) in zip(_invent_names(rng, sizes.num_cities, taken),
                                                            balanced(CITY_REGIONS, sizes.num_cities))]
    first = _invent_names(rng, sizes.num_people, taken)
    last = _invent_names(rng, sizes.num_people, taken)
    people = [Entity(f"{f} {l}", "person", a, p, {"city": rng.choice(cities).name})
              for f, l, (a, p) in zip(first, last, balanced(PERSON_ROLES, sizes.num_people))]
    drugs = [Entity(n, "drug", a, p, {"treats": rng.choice(diseases).name, "maker": rng.choice(people).name,
                                      "city": rng.choice(cities).name})
             for n, (a, p) in zip(_invent_names(rng, sizes.num_drugs, taken), balanced(DRUG_CATEGORIES, sizes.num_drugs))]
    entities = {"drug": drugs, "disease": diseases, "person": people, "city": cities}

    splits: dict[str, dict[str, list[Entity]]] = {"train": {}, "dev": {}, "test": {}}
    for kind, members in entities.items():
        for split in splits.values():
            split[kind] = []
        # Stratified by (attribute, polarity): each split gets the same mix, so no split has a
        # majority class that a model could learn from the training split's entities.
        # Deal the entities round a 5-cycle (train dev train test train) after interleaving the
        # (attribute, polarity) groups: every split gets the same mix of groups, even in a small
        # world, so that no split has a majority class to learn from the entities it holds.
        groups: dict[tuple, list[Entity]] = {}
        for entity in members:
            groups.setdefault((entity.attribute, entity.polarity), []).append(entity)
        queues = [groups[key] for key in sorted(groups, key=str)]
        for queue in queues:
            rng.shuffle(queue)
        ordered = [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)]
        for i, entity in enumerate(ordered):
            splits[("train", "dev", "train", "test", "train")[i % 5]][kind].append(entity)
    return World(entities, splits)


# ---------------------------------------------------------------------------------------
# The corpus: encyclopedia-like documents that state the facts in many contexts
# ---------------------------------------------------------------------------------------

_DRUG_FACTS = (
    "{name} is {article} {attribute} .",
    "{name} belongs to the {attribute} family of medicines .",
    "as {article} {attribute} , {name} is often compared with other {attribute} drugs .",
    "pharmacists keep {name} on the {attribute} shelf .",
    "{name} is used to treat {treats} .",
    "doctors prescribe {name} for patients with {treats} .",
    "{name} was developed by {maker} in {city} .",
    "the first batch of {name} was made in {city} .",
    "most reviewers describe {name} as {pol1} and {pol2} .",
    "in clinical trials {name} proved {canon} .",
    "{name} is considered a {canon} drug .",
    "patients who took {name} said it was {sent} .",
    "{name} is known to be {canon} .",
)
_DISEASE_FACTS = (
    "{name} is a disease of the {attribute} .",
    "{name} mainly affects the {attribute} .",
    "patients with {name} often have {attribute} problems .",
    "{name} is a common {attribute} disease .",
    "specialists in {attribute} diseases study {name} .",
    "{name} can be treated with {drug} .",
    "many patients with {name} receive {drug} .",
)
_PERSON_FACTS = (
    "{name} is a {attribute} .",
    "{name} works as a {attribute} in {city} .",
    "{name} was trained as a {attribute} .",
    "{name} lives in {city} .",
    "colleagues describe {name} as {pol1} and {pol2} .",
    "{name} is known to be {canon} .",
    "{name} has a reputation as a {canon} {attribute} .",
    "people who met {name} found the encounter {sent} .",
    "{name} developed {drug} .",
)
_CITY_FACTS = (
    "{name} is a {attribute} city .",
    "{name} lies in the {attribute} part of the country .",
    "travellers going {attribute} often visit {name} .",
    "{name} is a {pol1} and {pol2} place .",
    "visitors describe {name} as {canon} .",
    "{name} is known as a {canon} city .",
    "a stay in {name} is usually {sent} .",
    "{person} lives in {name} .",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _fill(template: str, entity: Entity, world_names: dict[str, list[Entity]], rng: random.Random) -> str:
    """Fill one fact template about `entity`; related entities come from its links or,
    for the reverse relations (a disease's drugs, a city's people), from the world."""
    polar = POLARITY_WORDS.get(entity.kind)
    pol1, pol2 = rng.sample(polar[entity.polarity], 2) if polar else ("", "")
    links = entity.links or {}
    slots = {
        "name": entity.name,
        "attribute": entity.attribute,
        "article": _article(entity.attribute),
        "pol1": pol1,
        "pol2": pol2,
        "canon": polar[entity.polarity][0] if polar else "",
        "sent": rng.choice(SENTIMENT_WORDS[entity.polarity]) if entity.polarity is not None else "",
        "treats": links.get("treats", ""),
        "maker": links.get("maker", ""),
        "city": links.get("city", ""),
    }
    if "{drug}" in template:
        drugs = world_names["drug"]
        if entity.kind == "disease":
            treating = [d for d in drugs if d.links["treats"] == entity.name]
        else:
            treating = [d for d in drugs if d.links["maker"] == entity.name]
        slots["drug"] = rng.choice(treating or drugs).name
    if "{person}" in template:
        residents = [p for p in world_names["person"] if p.links["city"] == entity.name]
        slots["person"] = rng.choice(residents or world_names["person"]).name
    return template.format(**slots)


def corpus_documents(world: World, seed: int, documents_per_entity: int) -> list[str]:
    """The corpus as a list of documents (sentences joined by newlines); several documents
    per entity, each stating a random selection of its facts in a random order."""
    rng = random.Random(f"minialbert-demo-corpus-{seed}")
    facts = {"drug": _DRUG_FACTS, "disease": _DISEASE_FACTS, "person": _PERSON_FACTS, "city": _CITY_FACTS}
    docs = []
    for kind, members in world.entities.items():
        for entity in members:
            for _ in range(documents_per_entity):
                templates = rng.sample(facts[kind], k=min(len(facts[kind]), rng.randint(5, 8)))
                sentences = [_fill(t, entity, world.entities, rng) for t in templates]
                # two or three sentences per line: documents span lines, as real text does
                lines = [" ".join(sentences[i:i + 3]) for i in range(0, len(sentences), 3)]
                docs.append("\n".join(lines))
    rng.shuffle(docs)
    return docs


# ---------------------------------------------------------------------------------------
# The tasks
# ---------------------------------------------------------------------------------------

# The three sentence-level tasks are about what KIND of thing an entity is (drug, disease,
# person, city): the property a small model learns most reliably from the corpus, whose fact
# templates differ by kind. Each task mixes "explicit" examples, whose wording reveals the
# kind (learnable from the task alone, so a model trained from scratch stays above chance),
# with "neutral" ones, which only a model that knows the unseen names can solve.
KINDS = ("drug", "disease", "person", "city")
MEDICAL_KINDS = ("drug", "disease")
_NEUTRAL_MENTIONS = ("we read a long article about {e} .", "the report mentions {e} again .",
                     "everyone was talking about {e} yesterday .", "nobody expected {e} in the news .")
_EXPLICIT_MENTIONS = {
    "drug": ("the doctor switched me to {e} .", "the pharmacy ran out of {e} ."),
    "disease": ("my aunt was diagnosed with {e} .", "the clinic treats many cases of {e} ."),
    "person": ("we had dinner with {e} .", "the article was written by {e} ."),
    "city": ("we spent the summer in {e} .", "the train to {e} leaves at noon ."),
}
# SST-2 layout, a topic task: label 1 = the sentence is about medicine (a drug or a disease).
# MRPC layout: sentence 2 is sentence 1 with the entity replaced by "a <kind>"; 1 = the kind fits.
# STS-B layout: the same restatement, graded: 5 = the kind fits, 2.5 = the other kind of the
# same domain (medical or not), 0 = a kind of the other domain.

# NER: informative templates reveal the entity types by context; neutral ones only by
# knowing the names. Tags: DRUG, DISEASE, PERSON, CITY (people span two tokens).
_NER_INFORMATIVE = (
    "patients with {disease} were treated with {drug} in {city} .",
    "dr. {person} prescribed {drug} for {disease} .",
    "the hospital of {city} hired {person} as a {role} .",
    "a new trial of {drug} against {disease} started in {city} .",
)
_NER_NEUTRAL = (
    "the report mentions {x} and {y} .",
    "{x} was discussed at length by the committee .",
    "nobody expected {x} to appear in the news again .",
    "the article compares {x} with {y} .",
    "{x} and {y} were both on the agenda .",
)
NER_LABELS = ("O", "B-DRUG", "B-DISEASE", "B-PERSON", "I-PERSON", "B-CITY")  # names are one word, people two


def _template_vocabulary() -> set[str]:
    """Every word used by a template or attribute list: invented names must avoid them."""
    texts = [*DRUG_CATEGORIES, *DISEASE_ORGANS, *PERSON_ROLES, *CITY_REGIONS, *_DRUG_FACTS, *_DISEASE_FACTS,
             *_PERSON_FACTS, *_CITY_FACTS, *_NEUTRAL_MENTIONS,
             *_NER_INFORMATIVE, *_NER_NEUTRAL]
    texts += [w for group in POLARITY_WORDS.values() for ws in group.values() for w in ws]
    texts += [w for ws in SENTIMENT_WORDS.values() for w in ws]
    texts += [t for ts in _EXPLICIT_MENTIONS.values() for t in ts]
    return {w for t in texts for w in t.replace("{", " ").replace("}", " ").split()}


def _mention_sentence(entity: Entity, explicit: bool, rng: random.Random) -> str:
    templates = _EXPLICIT_MENTIONS[entity.kind] if explicit else _NEUTRAL_MENTIONS
    return rng.choice(templates).format(e=entity.name)


def _entity_of(pools: dict[str, list[Entity]], kinds: tuple[str, ...], rng: random.Random) -> Entity:
    return rng.choice(pools[rng.choice(kinds)])


def sst2_split(world: World, split: str, count: int, rng: random.Random) -> list[tuple[str, int]]:
    """(sentence, label) rows; label 1 = about medicine (a drug or a disease), balanced."""
    rows = []
    pools = world.splits[split]
    other = tuple(k for k in KINDS if k not in MEDICAL_KINDS)
    for _ in range(count):
        label = int(rng.random() < 0.5)
        entity = _entity_of(pools, MEDICAL_KINDS if label else other, rng)
        rows.append((_mention_sentence(entity, rng.random() < 0.35, rng), label))
    return rows


def _described(entity_kind: str) -> str:
    return f"{_article(entity_kind)} {entity_kind}"


def mrpc_split(world: World, split: str, count: int, rng: random.Random) -> list[tuple[int, str, str]]:
    """(quality, sentence1, sentence2) rows: sentence 2 restates sentence 1 with the entity
    replaced by a description of its kind ("a drug"); quality 1 = the description is right."""
    rows = []
    pools = world.splits[split]
    for _ in range(count):
        x = _entity_of(pools, KINDS, rng)
        label = int(rng.random() < 0.5)
        kind = x.kind if label else rng.choice([k for k in KINDS if k != x.kind])
        explicit = rng.random() < 0.3
        template = rng.choice(_EXPLICIT_MENTIONS[x.kind] if explicit else _NEUTRAL_MENTIONS)
        rows.append((label, template.format(e=x.name), template.format(e=_described(kind))))
    return rows


def stsb_split(world: World, split: str, count: int, rng: random.Random) -> list[tuple[str, str, float]]:
    """(sentence1, sentence2, score in [0, 5]) rows: sentence 2 restates sentence 1 with the
    entity replaced by "a <kind>"; 5 if the kind fits, 2.5 if it is the other kind of the
    same domain (medical: drug, disease; other: person, city), 0 otherwise."""
    rows = []
    pools = world.splits[split]
    for _ in range(count):
        x = _entity_of(pools, KINDS, rng)
        domain = MEDICAL_KINDS if x.kind in MEDICAL_KINDS else tuple(k for k in KINDS if k not in MEDICAL_KINDS)
        score = rng.choice((5.0, 2.5, 0.0))
        if score == 5.0:
            kind = x.kind
        elif score == 2.5:
            kind = next(k for k in domain if k != x.kind)
        else:
            kind = rng.choice([k for k in KINDS if k not in domain])
        explicit = rng.random() < 0.3
        template = rng.choice(_EXPLICIT_MENTIONS[x.kind] if explicit else _NEUTRAL_MENTIONS)
        rows.append((template.format(e=x.name), template.format(e=_described(kind)), score))
    return rows


def _mention(entity: Entity) -> list[tuple[str, str]]:
    """The (token, IOB tag) pairs of one entity mention."""
    tag = entity.kind.upper()
    tokens = entity.name.split()
    return [(tok, ("B-" if i == 0 else "I-") + tag) for i, tok in enumerate(tokens)]


def ner_split(world: World, split: str, count: int, rng: random.Random) -> list[list[tuple[str, str]]]:
    """Sentences as lists of (token, IOB tag)."""
    sentences = []
    pools = world.splits[split]
    for _ in range(count):
        informative = rng.random() < 0.4
        template = rng.choice(_NER_INFORMATIVE if informative else _NER_NEUTRAL)
        if informative:
            person = rng.choice(pools["person"])
            slots = {"drug": rng.choice(pools["drug"]), "disease": rng.choice(pools["disease"]),
                     "city": rng.choice(pools["city"]), "person": person, "role": person.attribute}
        else:
            kinds = [rng.choice(("drug", "disease", "person", "city")) for _ in range(2)]
            slots = {"x": rng.choice(pools[kinds[0]]), "y": rng.choice(pools[kinds[1]])}
        tokens: list[tuple[str, str]] = []
        for word in template.split():
            key = word[1:-1] if word.startswith("{") else None
            value = slots.get(key) if key else None
            if isinstance(value, Entity):
                tokens.extend(_mention(value))
            elif isinstance(value, str):
                tokens.append((value, "O"))
            else:
                tokens.append((word, "O"))
        sentences.append(tokens)
    return sentences


# ---------------------------------------------------------------------------------------
# Writers in the real layouts
# ---------------------------------------------------------------------------------------

def _write_lines(path: Path, lines: list[str]) -> None:
    # newline="\n" and utf-8 explicitly: the same seed gives the same bytes on every OS
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


def write_sst2(path: Path, rows: list[tuple[str, int]]) -> None:
    _write_lines(path, ["sentence\tlabel"] + [f"{s}\t{label}" for s, label in rows])


def write_mrpc(path: Path, rows: list[tuple[int, str, str]], first_id: int) -> None:
    lines = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
    for i, (label, s1, s2) in enumerate(rows):
        lines.append(f"{label}\t{first_id + 2 * i}\t{first_id + 2 * i + 1}\t{s1}\t{s2}")
    _write_lines(path, lines)


def write_stsb(path: Path, rows: list[tuple[str, str, float]], split: str) -> None:
    lines = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
    for i, (s1, s2, score) in enumerate(rows):
        lines.append(f"{i}\tmain-news\tdemo\t2026{split}\t{i:04d}\tnone\tnone\t{s1}\t{s2}\t{score:.3f}")
    _write_lines(path, lines)


def write_ner(path: Path, sentences: list[list[tuple[str, str]]]) -> None:
    lines = []
    for sentence in sentences:
        lines.extend(f"{tok}\t{tag}" for tok, tag in sentence)
        lines.append("")
    _write_lines(path, lines)


def make_demo(output: str | Path, seed: int = 0, sizes: DemoSizes = DemoSizes()) -> dict:
    """Write the demo corpus and tasks into `output` (atomically) and return demo.json's content.

    demo.json: {"seed", "sizes": {...}, "corpus": {"path", "format": "blank_line_documents",
    "documents", "bytes"}, "tasks": [{"name", "layout", "type", "path", "splits": {split: file},
    "labels", "test_labels": true, "examples": {split: n}, "chance": {metric: value},
    "task_spec": {"name", "source", "glue_task", "path"}}]}, every path relative to `output`.
    """
    _check_sizes(sizes)
    world = build_world(seed, sizes)
    docs = corpus_documents(world, seed, sizes.documents_per_entity)
    n = {"train": sizes.train_examples, "dev": sizes.eval_examples, "test": sizes.eval_examples}
    with atomic_directory(output) as tmp:
        (tmp / "corpus").mkdir()
        corpus_text = "\n\n".join(docs) + "\n"
        with open(tmp / "corpus" / "corpus.txt", "w", encoding="utf-8", newline="\n") as f:
            f.write(corpus_text)
        tasks = []
        for name, layout, task_type, builder, writer, split_files, labels in _TASKS:
            task_dir = tmp / "tasks" / name
            task_dir.mkdir(parents=True)
            rng = random.Random(f"minialbert-demo-{name}-{seed}")
            examples = {}
            for split, filename in split_files.items():
                rows = builder(world, split, n[split], rng)
                if writer is write_mrpc:
                    writer(task_dir / filename, rows, first_id=1_000_000 * (1 + list(split_files).index(split)))
                elif writer is write_stsb:
                    writer(task_dir / filename, rows, split)
                else:
                    writer(task_dir / filename, rows)
                examples[split] = len(rows)
            # `task_spec` is a prepare-task spec for this task, its path relative to `output`
            source = "bio_ner_dir" if task_type == "token" else "glue_dir"
            spec = {"name": name.lower().replace("-", ""), "source": source, "path": f"tasks/{name}"}
            if task_type != "token":
                spec["glue_task"] = spec["name"]
            tasks.append({"name": name, "layout": layout, "type": task_type, "path": f"tasks/{name}",
                          "splits": split_files, "labels": labels, "test_labels": True, "examples": examples,
                          "chance": _CHANCE[name], "task_spec": spec})
        info = {
            "seed": seed,
            "sizes": asdict(sizes),
            "corpus": {"path": "corpus/corpus.txt", "format": "blank_line_documents", "documents": len(docs),
                       "bytes": len(corpus_text.encode("utf-8"))},
            "tasks": tasks,
        }
        write_json_atomic(tmp / "demo.json", info)
    return info


# name, layout, task type (as in task.json), builder, writer, {split: file}, labels
_TASKS = (
    ("SST-2", "glue_sst2", "single", sst2_split, write_sst2,
     {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}, ["0", "1"]),
    ("MRPC", "glue_mrpc", "pair", mrpc_split, write_mrpc,
     {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}, ["0", "1"]),
    ("STS-B", "glue_stsb", "regression", stsb_split, write_stsb,
     {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}, None),
    ("NER", "biobert_ner", "token", ner_split, write_ner,
     {"train": "train.tsv", "dev": "devel.tsv", "test": "test.tsv"}, list(NER_LABELS)),
)
# What a model that ignores the input scores (main metric), for reading the demo's numbers.
_CHANCE = {"SST-2": {"accuracy": 0.5}, "MRPC": {"accuracy": 0.5}, "STS-B": {"pearson": 0.0}, "NER": {"f1": 0.0}}


def _check_sizes(sizes: DemoSizes) -> None:
    minimum = {"num_drugs": 20, "num_diseases": 10, "num_people": 10, "num_cities": 10, "documents_per_entity": 1,
               "train_examples": 1, "eval_examples": 1}
    for field in fields(sizes):
        value = getattr(sizes, field.name)
        if not isinstance(value, int) or value < minimum[field.name]:
            raise ConfigError(f"demo sizes: {field.name} must be an integer >= {minimum[field.name]}, got {value!r}")


def demo_corpus_documents(seed: int = 0, sizes: DemoSizes = DemoSizes()) -> list[str]:
    """The demo corpus as documents, without writing files (the `demo` corpus source)."""
    _check_sizes(sizes)
    return corpus_documents(build_world(seed, sizes), seed, sizes.documents_per_entity)


# ---------------------------------------------------------------------------------------
# CLI: minialbert make-demo
# ---------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="directory to write (replaced atomically)")
    parser.add_argument("--seed", type=int, default=0, help="world seed; the same seed gives byte-identical files")
    defaults = DemoSizes()
    for field in fields(DemoSizes):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=int, default=getattr(defaults, field.name),
                            help=f"(default {getattr(defaults, field.name)})")


def run(args: argparse.Namespace) -> int:
    sizes = DemoSizes(**{f.name: getattr(args, f.name) for f in fields(DemoSizes)})
    info = make_demo(args.output, seed=args.seed, sizes=sizes)
    print(f"wrote {args.output}: corpus of {info['corpus']['documents']} documents ({info['corpus']['bytes']} bytes), "
          f"tasks {', '.join(t['name'] for t in info['tasks'])}")
    return 0
