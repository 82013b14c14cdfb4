/**
 * The vocabulary of the random BERT models that the tests and the benchmark
 * generate (src/tools/random-model.ts): about 2,200 common English words
 * (lower case, no duplicates) plus what makes any lower-case text tokenise
 * without [UNK]. Written for this project, not taken from any corpus: real
 * words make such a model's tokenizer split sentences like a real BERT's,
 * even though its weights are random. (The bundled demo models are trained:
 * tools/train/.)
 */

const SPECIAL_TOKENS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];
/** Every ASCII punctuation character: BERT's pre-tokenizer splits each into its own token. */
const PUNCTUATION = [...'!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~'];
const DIGITS = [...'0123456789'];
const LETTERS = [...'abcdefghijklmnopqrstuvwxyz'];
/** Frequent endings, so inflected words outside the list split into word + suffix. */
const SUFFIXES = ['##s', '##es', '##ed', '##ing', '##ly', '##er', '##est', '##ness', '##ment', '##tion',
  '##al', '##ful', '##less', '##able', '##ity', '##ous', '##ive'];

/**
 * The vocabulary in id order: specials ([PAD] is 0), punctuation, digits,
 * single letters, ##-continuations of letters and digits (so any lower-case
 * word or number is tokenised without [UNK]), suffixes, then COMMON_WORDS.
 */
export function randomModelVocabulary(): string[] {
  const tokens = [
    ...SPECIAL_TOKENS, ...PUNCTUATION, ...DIGITS, ...LETTERS,
    ...LETTERS.map((c) => `##${c}`), ...DIGITS.map((c) => `##${c}`), ...SUFFIXES, ...COMMON_WORDS,
  ];
  return [...new Set(tokens)];
}

const COMMON_WORDS: readonly string[] = `
the of and to a in is it you that he was for on are with as i his they be at one have this from or
had by not word but what some we can out other were all there when up use your how said an each she
which do their time if will way about many then them write would like so these her long make thing
see him two has look more day could go come did number sound no most people my over know water than
call first who may down side been now find any new work part take get place made live where after
back little only round man year came show every good me give our under name very through just form
sentence great think say help low line differ turn cause much mean before move right boy old too
same tell does set three want air well also play small end put home read hand port large spell add
even land here must big high such follow act why ask men change went light kind off need house
picture try us again animal point mother world near build self earth father head stand own page
should country found answer school grow study still learn plant cover food sun four between state
keep eye never last let thought city tree cross farm hard start might story saw far sea draw left
late run while press close night real life few north open seem together next white children begin
got walk example ease paper group always music those both mark often letter until mile river car
feet care second book carry took science eat room friend began idea fish mountain stop once base
hear horse cut sure watch color face wood main enough plain girl usual young ready above ever red
list though feel talk bird soon body dog family direct pose leave song measure door product black
short numeral class wind question happen complete ship area half rock order fire south problem
piece told knew pass since top whole king space heard best hour better true during hundred five
remember step early hold west ground interest reach fast verb sing listen six table travel less
morning ten simple several vowel toward war lay against pattern slow center love person money serve
appear road map rain rule govern pull cold notice voice unit power town fine certain fly fall lead
cry dark machine note wait plan figure star box noun field rest correct able pound done beauty
drive stood contain front teach week final gave green oh quick develop ocean warm free minute
strong special mind behind clear tail produce fact street inch multiply nothing course stay wheel
full force blue object decide surface deep moon island foot system busy test record boat common
gold possible plane stead dry wonder laugh thousand ago ran check game shape equate hot miss
brought heat snow tire bring yes distant fill east paint language among grand ball yet wave drop
heart am present heavy dance engine position arm wide sail material size vary settle speak weight
general ice matter circle pair include divide syllable felt perhaps pick sudden count square reason
length represent art subject region energy hunt probable bed brother egg ride cell believe fraction
forest sit race window store summer train sleep prove lone leg exercise wall catch mount wish sky
board joy winter sat written wild instrument kept glass grass cow job edge sign visit past soft fun
bright gas weather month million bear finish happy hope flower clothe strange gone jump baby eight
village meet root buy raise solve metal whether push seven paragraph third shall held hair describe
cook floor either result burn hill safe cat century consider type law bit coast copy phrase silent
tall sand soil roll temperature finger industry value fight lie beat excite natural view sense ear
else quite broke case middle kill son lake moment scale loud spring observe child straight
consonant nation dictionary milk speed method organ pay age section dress cloud surprise quiet
stone tiny climb cool design poor lot experiment bottom key iron single stick flat twenty skin
smile crease hole trade melody trip office receive row mouth exact symbol die least trouble shout
except wrote seed tone join suggest clean break lady yard rise bad blow oil blood touch grew cent
mix team wire cost lost brown wear garden equal sent choose fell fit flow fair bank collect save
control decimal gentle woman captain practice separate difficult doctor please protect noon whose
locate ring character insect caught period indicate radio spoke atom human history effect electric
expect crop modern element hit student corner party supply bone rail imagine provide agree thus
capital chair danger fruit rich thick soldier process operate guess necessary sharp wing create
neighbor wash bat rather crowd corn compare poem string bell depend meat rub tube famous dollar
stream fear sight thin triangle planet hurry chief colony clock mine tie enter major fresh search
send yellow gun allow print dead spot desert suit current lift rose continue block chart hat sell
success company subtract event particular deal swim term opposite wife shoe shoulder spread arrange
camp invent cotton born determine quart nine truck noise level chance gather shop stretch throw
shine property column molecule select wrong gray repeat require broad prepare salt nose plural
anger claim continent oxygen sugar death pretty skill women season solution magnet silver thank
branch match suffix especially fig afraid huge sister steel discuss forward similar guide
experience score apple bought led pitch coat mass card band rope slip win dream evening condition
feed tool total basic smell valley nor double seat arrive master track parent shore division sheet
substance favor connect post spend chord fat glad original share station dad bread charge proper
bar offer segment slave duck instant market degree populate chick dear enemy reply drink occur
support speech nature range steam motion path liquid log meant quotient teeth shell neck being
having doing goes going gets getting makes making taking takes gives giving given says saying comes
coming sees seeing seen knows knowing known thinks thinking looks looking looked wants wanted uses
used using finds tells telling asks asked asking works worked working seems seemed feels feeling
tries tried trying leaves leaving calls called calling needs needed becomes became become keeps
begins begun helps helped shows showed shown hears plays played playing runs running moves moved
lives lived living believes believed holds brings happens happened writes writing sits stands
standing loses pays paid meets meeting includes included continues continued sets learns learned
changes changed leads understands understood watches watched follows followed stops stopped creates
created speaks spoken reads allows allowed adds added spends spent grows grown opens opened walks
walked wins won offers offered remembers loves loved considers considered appears appeared buys
waits waited serves served dies died sends expects expected builds built stays stayed falls cuts
reaches reached kills killed remains remained suggests suggested raises raised passes passed sells
sold requires required reports reported decides decided pulls pulled myself yours yourself himself
hers herself its itself ours ourselves theirs themselves whom whatever whoever someone somebody
something anyone anybody anything everyone everybody everything nobody none neither another because
although whereas unless whenever wherever almost already sometimes usually seldom rarely twice
however therefore hence moreover indeed maybe probably certainly surely really actually simply
nearly hardly across along around below beneath beside besides beyond despite inside into onto
outside per throughout till towards underneath unlike upon via within without thanks hello goodbye
okay monday tuesday wednesday thursday friday saturday sunday january february march april june
july august september october november december today tomorrow yesterday tonight weekend autumn
zero eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen thirty forty fifty
sixty seventy eighty ninety billion fourth fifth sixth seventh eighth ninth tenth quarter dozen
orange purple pink grey golden pale france paris germany berlin italy rome spain madrid england
london britain british english french german italian spanish europe european america american
canada canadian mexico brazil argentina china chinese japan japanese tokyo india indian russia
russian moscow africa african egypt cairo australia sydney asia asian korea ireland dublin scotland
wales greece athens turkey portugal lisbon poland warsaw sweden norway denmark finland holland
netherlands amsterdam belgium brussels switzerland austria vienna prague beijing shanghai delhi
york washington chicago boston texas california florida atlantic pacific eiffel tower bridge castle
palace church temple museum library hospital airport hotel restaurant cafe theater cinema stadium
park zoo university college factory bakery mall prison court pig sheep goat chicken mouse rat
rabbit lion tiger wolf fox deer elephant monkey snake frog bee ant spider whale shark dolphin eagle
owl animals dogs cats birds horses butter cheese eggs beef pork rice pasta pizza soup salad
sandwich cake cookie chocolate coffee tea juice wine beer pepper banana lemon grape potato tomato
onion carrot bean vegetable breakfast lunch dinner meal kitchen eyes ears lip tooth tongue arms
hands fingers legs knee toe chest brain stomach mom parents daughter husband grandmother
grandfather uncle aunt cousin friends boyfriend girlfriend boys girls kid kids teacher nurse lawyer
police officer farmer driver pilot engineer scientist artist writer author singer actor actress
player coach manager worker president minister queen prince princess leader judge chef waiter
computer phone internet email website software program data network screen keyboard camera video
television movie film games photo image message newspaper magazine books stories novel songs cars
bus bicycle bike taxi highway cities countries stars storm trees flowers beach price dollars euro
pounds business companies jobs economy tax taxes government laws peace army election vote policy
rights health medicine disease education schools lesson exam math mathematics physics chemistry
biology languages worse worst sad angry tired hungry easy important impossible beautiful ugly nice
weak empty dirty closed false popular different public private local national international social
political economic ancient minor serious rooms doors windows walls roof desk sofa lamp mirror
bathroom bedroom gate keys bag cup plate bottle knife fork spoon shirt shoes jacket times years
months weeks days hours minutes seconds afternoon ages future things ways places parts numbers
problems questions answers ideas reasons examples facts points sides results cases groups areas
systems kinds types levels lines forms words names ability absence academic accept accepted access
accident account achieve action active activity address admit adult advance advantage advice affair
affect afford agency agent agreement ahead aim alone amount analysis announce annual apart
apartment apply approach approve argue argument arrival article aspect assume attack attempt attend
attention attitude audience available average avoid award aware away background balance basis
battle beginning behavior benefit birth blind border borrow boss bother brief budget burden
campaign cancer candidate capacity career careful carefully central challenge champion channel
chapter choice citizen civil classic climate collection comfort comment commercial commit committee
communication community compete competition complex concept concern concert conclusion conference
conflict congress connection contact content context contract contrast contribute conversation
council couple courage crime crisis critic culture customer damage debate decade decision defense
define demand department deny depth description desire detail device difference direction director
discover discovery discussion distance doubt drama duty editor effort emotion employee encourage
environment episode error escape essay estimate evidence exactly examine exist expert explain
express extend eventually factor failure faith familiar fashion feature federal fee finally
financial firm fixed focus foreign forget forever formal former fortune foundation frame freedom
friendly function fund funny gain gap generation gift global goal god growth guard guest guy habit
hall handle hang hate height hero hide highly hire holiday honest honor host identity ignore
illness impact improve incident income increase individual influence inform information injury
instead institution intelligence internal interview introduce investment involve issue item journey
justice keen knowledge label labor lack largely later laughter launch layer lecture legal limit
link load loan location logic lonely loss lucky mail maintain manage manner marriage mature meaning
media medical memory mental mention military mission mistake mixture model moral mostly movement
murder mystery narrow native normal obvious occasion official operation opinion opportunity option
ordinary organization otherwise owner package pain panel passage patient percent perfect
performance permit personal phase physical plastic platform pleasure plenty pocket poet poetry pool
population portion positive possibility potential poverty prefer pressure prevent previous pride
primary principle priority prize profit progress project promise proof proposal prospect protection
proud purpose quality quickly quietly rate reaction reader reality realize recent recently
recognize recommend reduce reflect reform refuse regard relation relationship release relief
religion remove rent request research resource respect response responsibility return reveal review
reward risk role routine sale sample scene schedule scheme secret secretary security senior series
service session shadow shake shift shock shot signal significant silence site situation society
source speaker spirit sport staff stage standard status steady strategy stress structure style
succeed suffer suitable supper survey survive suspect symptom talent target task taste teaching
technology tension terrible text theory threat ticket title topic tour tourist tradition traffic
training transport treat treatment trend trial trust truth twin typical union unique universe
unusual upset urban useful vacation valuable version victim violence virtue vision visitor volume
wage warning wealth weapon welcome welfare willing winner wisdom witness wonderful worry youth
`.trim().split(/\s+/);
