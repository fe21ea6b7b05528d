// SPDX-License-Identifier: Apache-2.0
// The demo's data, generated: a small language of product reviews (restaurants, films, hotels)
// whose sentences carry a sentiment, word-level tokens, a language-modelling corpus for
// pretraining and a sentiment classification task for fine-tuning, scored the MeZO way: a prompt
// ending in "it was", then the model's probabilities of the label words "great" and "terrible".
//
// The two tasks differ on purpose. The corpus never asks for a verdict: "great" and "terrible"
// occur there only as opinion adjectives among many, "great" often and "terrible" rarely, at the
// polarity of the review they are in. A pretrained model therefore knows both words but has
// never been trained to sum a review up in one of them, and its prior for the rare one is low:
// prompted zero-shot it answers "great" to nearly every review (50% on the balanced test set),
// although its hidden states do encode the polarity, which fine-tuning has to connect to the
// label words. The task's reviews also carry more opinion words of the other polarity than the
// corpus's, and never the label words themselves.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>
#include <zo/core/errors.hpp>

#include "../common/check.hpp"
#include "opt_model.hpp"

namespace reviews {

// The whole vocabulary, one word per token, in token-id order.
inline const std::vector<std::string>& vocabulary() {
  static const std::vector<std::string> words = [] {
    std::vector<std::string> w = {
        // Function words and punctuation.
        "<bos>", ".", ",", "review", ":", "the", "a", "it", "was", "were", "is", "and", "but",
        "very", "quite", "really", "not", "we", "i", "they", "found", "thought", "this", "that",
        "our", "my", "of", "with", "too", "so", "again", "would", "come", "back", "never",
        // Positive and negative verbs.
        "loved", "liked", "enjoyed", "recommend", "hated", "disliked", "regret", "avoid",
        // Topic nouns: restaurant, film, hotel.
        "soup", "bread", "pasta", "salad", "cake", "coffee", "waiter", "menu", "movie", "plot",
        "actor", "scene", "story", "ending", "music", "cast", "room", "bed", "staff", "pool",
        "view", "lobby", "breakfast", "service",
        // Positive adjectives, then negative ones; "great" and "terrible" are the label words.
        "good", "nice", "fresh", "lovely", "tasty", "warm", "clean", "friendly", "fun", "bright",
        "superb", "great", "bad", "stale", "cold", "dirty", "rude", "dull", "boring", "awful",
        "slow", "noisy", "poor", "terrible"};
    return w;
  }();
  return words;
}

inline int token(std::string_view word) {
  static const std::unordered_map<std::string, int> ids = [] {
    std::unordered_map<std::string, int> m;
    const auto& v = vocabulary();
    for (std::size_t i = 0; i < v.size(); ++i)
      m.emplace(v[i], static_cast<int>(i));
    return m;
  }();
  const auto it = ids.find(std::string(word));
  zo_examples::require(it != ids.end(), "reviews: '" + std::string(word) + "' is not a word");
  return it->second;
}

inline std::vector<int> tokenize(std::string_view text) {
  std::vector<int> out;
  std::istringstream in{std::string(text)};
  for (std::string word; in >> word;)
    out.push_back(token(word));
  return out;
}

inline std::string detokenize(const std::vector<int>& tokens) {
  std::string out;
  for (int t : tokens) {
    if (!out.empty()) out += ' ';
    out += vocabulary().at(static_cast<std::size_t>(t));
  }
  return out;
}

inline int vocabulary_size() {
  return static_cast<int>(vocabulary().size());
}

inline const std::array<int, 2>& label_tokens() {
  static const std::array<int, 2> labels = {token("terrible"), token("great")};
  return labels;
}

// How a generator draws reviews.
struct review_style {
  double consistency = 0.95;  // probability that an opinion word has the review's polarity
  int min_sentences = 2, max_sentences = 5;
  bool label_words_in_text = true;  // may "great" and "terrible" appear in the review?
  // Of the positive (negative) opinion adjectives, the share that is "great" ("terrible").
  double great_share = 0.3, terrible_share = 0.02;
};

class review_generator {
 public:
  explicit review_generator(std::uint64_t seed) : engine_(seed) {}

  // Words of one review body (no "review :" header) of the given polarity (1 positive).
  std::vector<std::string> body(int polarity, const review_style& style) {
    const auto& topic = topics()[pick(topics().size())];
    std::vector<std::string> words;
    const int sentences =
        std::uniform_int_distribution<int>(style.min_sentences, style.max_sentences)(engine_);
    for (int s = 0; s < sentences; ++s)
      sentence(topic, polarity, style, words);
    return words;
  }

  int coin() { return std::bernoulli_distribution(0.5)(engine_) ? 1 : 0; }
  std::mt19937_64& engine() { return engine_; }

 private:
  using word_list = std::vector<std::string>;

  static const std::array<word_list, 3>& topics() {
    static const std::array<word_list, 3> t = {
        word_list{"soup", "bread", "pasta", "salad", "cake", "coffee", "waiter", "menu"},
        word_list{"movie", "plot", "actor", "scene", "story", "ending", "music", "cast"},
        word_list{"room", "bed", "staff", "pool", "view", "lobby", "breakfast", "service"}};
    return t;
  }

  std::size_t pick(std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(engine_);
  }
  const std::string& pick(const word_list& list) { return list[pick(list.size())]; }

  // An opinion word of the review's polarity with probability `consistency`, else of the other.
  int opinion(int polarity, const review_style& style) {
    return std::bernoulli_distribution(style.consistency)(engine_) ? polarity : 1 - polarity;
  }
  const std::string& adjective(int polarity, const review_style& style) {
    static const word_list positive = {"good",  "nice",     "fresh", "lovely", "tasty", "warm",
                                       "clean", "friendly", "fun",   "bright", "superb"};
    static const word_list negative = {"bad",    "stale", "cold", "dirty", "rude", "dull",
                                       "boring", "awful", "slow", "noisy", "poor"};
    static const std::string great = "great", terrible = "terrible";
    const int side = opinion(polarity, style);
    // The label words are opinion words of very different frequency, as in real text: "great"
    // is common, "terrible" rare. A model's prior for them is then skewed, which prompting
    // inherits and fine-tuning can correct.
    if (style.label_words_in_text) {
      const double share = side == 1 ? style.great_share : style.terrible_share;
      if (std::bernoulli_distribution(share)(engine_)) return side == 1 ? great : terrible;
    }
    return pick(side == 1 ? positive : negative);
  }
  const std::string& verb(int polarity, const review_style& style) {
    static const word_list positive = {"loved", "liked", "enjoyed"};
    static const word_list negative = {"hated", "disliked"};
    return pick(opinion(polarity, style) == 1 ? positive : negative);
  }

  void sentence(const word_list& topic, int polarity, const review_style& style, word_list& out) {
    auto add = [&](std::initializer_list<std::string> words) {
      out.insert(out.end(), words.begin(), words.end());
    };
    static const word_list intensifiers = {"very", "quite", "really", "so", "too"};
    static const word_list people = {"we", "i", "they"};
    switch (pick(8)) {
      case 0:
        add({"the", pick(topic), "was", adjective(polarity, style), "."});
        break;
      case 1:
        add({"the", pick(topic), "was", pick(intensifiers), adjective(polarity, style), "."});
        break;
      case 2:
        add({pick(people), "found", "the", pick(topic), adjective(polarity, style), "."});
        break;
      case 3:
        add({"the", adjective(polarity, style), pick(topic), "and", "the",
             adjective(polarity, style), pick(topic), "."});
        break;
      case 4:
        add({pick(people), verb(polarity, style), "the", pick(topic), "."});
        break;
      case 5:
        add({"the", pick(topic), "was", adjective(polarity, style), "but", "the", pick(topic),
             "was", adjective(1 - polarity, style), "."});
        break;
      case 6:
        add({"it", "was", adjective(polarity, style), "."});
        break;
      default:
        if (opinion(polarity, style) == 1) {
          add({pick(people), "would", "come", "back", "again", "."});
        } else {
          add({pick(people), "would", "never", "come", "back", "."});
        }
        break;
    }
  }

  std::mt19937_64 engine_;
};

// The pretraining corpus: reviews one after another ("<bos> review : ..."), cut into windows of
// `length` tokens with a next-token target at every position but the last.
inline opt::batch language_modelling_windows(std::uint64_t seed, std::size_t count, int length) {
  zo_examples::require(length >= 2, "reviews: windows need at least 2 tokens");
  review_generator generator(seed);
  const review_style style;
  std::vector<int> stream;
  const std::size_t needed = count * static_cast<std::size_t>(length);
  while (stream.size() < needed + static_cast<std::size_t>(length)) {
    for (const char* w : {"<bos>", "review", ":"})
      stream.push_back(token(w));
    for (const auto& w : generator.body(generator.coin(), style))
      stream.push_back(token(w));
  }
  opt::batch windows;
  // Windows start at random offsets, so a window may begin mid-review as in any LM corpus.
  std::uniform_int_distribution<std::size_t> start(0, stream.size() - length);
  for (std::size_t i = 0; i < count; ++i) {
    opt::example ex;
    const std::size_t s = start(generator.engine());
    ex.tokens.assign(stream.begin() + static_cast<std::ptrdiff_t>(s),
                     stream.begin() + static_cast<std::ptrdiff_t>(s) + length);
    for (int p = 0; p + 1 < length; ++p)
      ex.targets.push_back({p, ex.tokens[static_cast<std::size_t>(p) + 1]});
    windows.push_back(std::move(ex));
  }
  return windows;
}

// The downstream task's style: noisier reviews than the corpus's, without the label words.
inline review_style task_style() {
  return {
      .consistency = 0.85, .min_sentences = 2, .max_sentences = 4, .label_words_in_text = false};
}

// Sentiment classification examples: "<bos> review : <body> it was" with one target, at the
// last position, the label word of the review's polarity. The labels alternate, so the set is
// balanced.
inline opt::batch sentiment_examples(std::uint64_t seed, std::size_t count) {
  review_generator generator(seed);
  const review_style style = task_style();
  opt::batch out;
  for (std::size_t i = 0; i < count; ++i) {
    const int polarity = static_cast<int>(i % 2);
    opt::example ex;
    ex.tokens = tokenize("<bos> review :");
    for (const auto& w : generator.body(polarity, style))
      ex.tokens.push_back(token(w));
    ex.tokens.push_back(token("it"));
    ex.tokens.push_back(token("was"));
    ex.targets.push_back({static_cast<int>(ex.tokens.size()) - 1,
                          label_tokens()[static_cast<std::size_t>(polarity)]});
    out.push_back(std::move(ex));
  }
  // Shuffled, so that a batch drawn in order is not all one label.
  std::shuffle(out.begin(), out.end(), generator.engine());
  return out;
}

// The loss options of the task: cross-entropy over the two label words only (MeZO's
// classification loss).
inline opt::loss_options label_word_loss() {
  const auto& labels = label_tokens();
  return {.candidates = {labels[0], labels[1]}};
}

}  // namespace reviews
