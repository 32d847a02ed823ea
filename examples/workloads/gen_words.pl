#!/usr/bin/perl
# gen_words.pl SEED: print 30,000 pseudo-random words (a Zipf-like vocabulary), one per line,
# the same for the same SEED (perl's srand/rand are deterministic for a given seed).
use strict;
use warnings;

my $seed = shift // die "usage: gen_words.pl SEED\n";
srand($seed);
my @letters = split //, "etaoinshrdlucmfwypvbgkjqxz";
my @vocab;
for my $i (1 .. 2000) {
    my $len = 2 + int(rand(8));
    push @vocab, join "", map { $letters[int(rand(rand() < 0.7 ? 10 : 26))] } 1 .. $len;
}
for my $i (1 .. 30000) {
    my $rank = int(2000 * rand() ** 3);    # low ranks are common
    print $vocab[$rank], "\n";
}
