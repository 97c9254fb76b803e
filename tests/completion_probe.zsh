# zsh -f completion_probe.zsh FPATH_DIR LINE: the matches zsh's own completion system offers
# for LINE<TAB>, one a line (a real interactive zsh on a pty, compinit, the generated _catkeeper).
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1=''; fpath=(${(q)1} \$fpath); autoload -U compinit; compinit -u -D"
# Each match compadd is given is printed between <>, instead of being inserted; TAB runs
# the completion, then prints a marker that only the output spells out.
zpty -w z 'compadd() { local -a m; builtin compadd -O m "$@"; print -rl -- "<${^m[@]}>" }'
zpty -w z '_probe() { zle complete-word; print -r -- "@@DO""NE@@" }; zle -N _probe; bindkey "^I" _probe'
zpty -n -w z "$2"$'\t'
zpty -r z out '*@@DONE@@*' || exit 3
print -r -- "$out" | grep -o '<[^>$]*>' | tr -d '<>' | sort -u
zpty -d z
