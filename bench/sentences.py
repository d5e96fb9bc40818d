"""Benchmark texts: a fixed short and long sentence for latency, and varied sentences for emotion and WER.

The varied sentences mix statements, questions and exclamations, short and long, everyday and formal, so
prosody measures are not the quirk of one sentence shape. They avoid digits, abbreviations and words
Whisper may spell two ways (compounds, British/American spellings), so WER measures intelligibility only.
"""

from __future__ import annotations

SHORT = "Please call me when you arrive."  # 6 words: a typical first phrase
LONG = (
    "When the morning train was late again, we waited on the cold platform and talked about the long "
    "summer holidays we had all planned together."
)  # 25 words: several phrases, so the later ones overlap playback of the first

VARIED = (
    "I would like a cup of tea with milk and no sugar.",
    "The weather is lovely today, so we are going for a walk in the park.",
    "Did you remember to lock the front door before you left?",
    "She finally passed her driving test after three attempts.",
    "Could you tell me where the nearest train station is?",
    "We have to leave right now or we will miss the last bus.",
    "The museum is closed on Mondays, but the garden stays open.",
    "I cannot believe you finished the whole book in one night!",
    "My brother plays the guitar in a small band on weekends.",
    "Please put the green folder on the table by the window.",
    "The children laughed when the puppy chased its own tail.",
    "Nobody told me that the meeting had been moved to Friday.",
    "Thank you so much for helping me carry these heavy boxes.",
    "The soup needs a little more salt and some fresh pepper.",
    "I heard a strange noise coming from the kitchen last night.",
    "Our flight was cancelled, so we spent the evening at the airport.",
    "He opened the letter slowly and read it twice.",
    "Would you rather watch a film or go out for dinner?",
    "The doctor said I should rest and drink plenty of water.",
    "They planted apple trees along the edge of the field.",
    "Turn left at the church and follow the road to the river.",
    "I am so proud of everything you have achieved this year.",
    "The lights went out just as the story reached its ending.",
    "Remember to water the plants while I am away.",
)

assert len(SHORT.split()) == 6 and len(LONG.split()) == 25
