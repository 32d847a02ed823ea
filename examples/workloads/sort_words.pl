#!/usr/bin/perl
# sort_words.pl FILE: count the words of FILE (one per line) in a hash, then print them by
# falling count and alphabetically within a count, and the sorted list of distinct words.
use strict;
use warnings;

my $file = shift // die "usage: sort_words.pl FILE\n";
open my $in, "<", $file or die "$file: $!\n";
my %count;
while (my $w = <$in>) {
    chomp $w;
    $count{$w}++;
}
close $in;
for my $w (sort { $count{$b} <=> $count{$a} or $a cmp $b } keys %count) {
    printf "%6d %s\n", $count{$w}, $w;
}
my @words = sort keys %count;
print scalar(@words), " distinct words, first $words[0], last $words[-1]\n";
