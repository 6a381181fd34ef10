"""Built-in off-topic anchors: generic requests no business route should take.

A prompt closer to these than to any route is taken for off-topic (the implicit `none`
class of the `hybrid` and `logreg` methods). They are deliberately generic (chit-chat,
general knowledge, homework, entertainment, personal life), not about any one company's
routes, so they hold for any catalog. An operator adds their own off-topic examples with
`agentledger route fit` (labelled examples whose route is null).
"""

from __future__ import annotations

__all__ = ["OFF_TOPIC_ANCHORS"]

OFF_TOPIC_ANCHORS: tuple[str, ...] = (
    "hi, how are you doing today?",
    "tell me a joke",
    "what's the weather like tomorrow?",
    "who won the football game last night?",
    "give me a recipe for banana bread",
    "what should I cook for dinner tonight?",
    "write a short poem about the sea",
    "what is the capital of Australia?",
    "how far away is the moon?",
    "explain photosynthesis in simple words",
    "help me with my algebra homework",
    "what is 15 percent of 80?",
    "recommend a good movie to watch this weekend",
    "what are some good books to read on holiday?",
    "translate 'good morning' into Italian",
    "how do I fix a flat bicycle tyre?",
    "my cat keeps scratching the sofa, what can I do?",
    "how do I get over a breakup?",
    "what are the symptoms of the flu?",
    "how many calories are in an avocado?",
    "plan a three-day trip to Lisbon for me",
    "who painted the Mona Lisa?",
    "when did the Second World War end?",
    "how do black holes form?",
    "what's a good name for a golden retriever puppy?",
    "how do I write a for loop in Python?",
    "what is the difference between a virus and a bacterium?",
    "suggest a workout routine for beginners",
    "how do I grow tomatoes on a balcony?",
    "what time is it in Tokyo right now?",
    "sing me a song",
    "what's the meaning of life?",
    "are you a robot?",
    "I'm bored, entertain me",
    "what's your favourite colour?",
    "how do I make my houseplants live longer?",
    "write a birthday message for my grandmother",
    "how do airplanes stay in the air?",
    "what's the best way to learn a new language?",
    "explain the rules of chess",
    "who is the richest person in the world?",
    "how do I remove a red wine stain from a carpet?",
    "is coffee bad for your health?",
    "write a haiku about autumn leaves",
    "what's the population of Brazil?",
    "how do volcanoes erupt?",
    "give me ideas for a child's birthday party",
    "what's the history of the Roman empire in a few sentences?",
    "how do I tie a tie?",
    "can you recommend a podcast about science?",
    # General knowledge, homework and creative writing, whatever the topic: a business's
    # words in an essay question or a poem are still not a request to that business.
    "explain how vaccines work, it's for my biology class",
    "what is the origin of the word 'algebra'?",
    "write a funny limerick about a teacher",
    "write a short story about a lighthouse keeper",
    "how does the stock market work in general?",
    "explain encryption to me like I'm ten",
    "what's the history of the telephone?",
    "how do companies decide what to charge for things, in economics terms?",
    "how do I merge two lists in JavaScript?",
    "why does my laptop fan get so loud when I play games?",
    "how do I ask my boss for a day off?",
    "how should I budget my monthly salary?",
    "what's the etiquette for replying to a dinner invitation?",
    "thanks, that's all, goodbye",
    "ok cool",
)
